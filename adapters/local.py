"""The local-directory backend: the embedded default (`file:///path` or a path)."""

import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from loraplex.adapters.backend import Backend
from loraplex.adapters.errors import StoreUnavailable


class LocalBackend(Backend):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.url = f"file://{self.root}"
        try:  # a local store is just a directory: an empty one is a valid store
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create adapter store {self.url}: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {self.url}/{key}: {exc}") from exc

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        data = self.read(key)
        return data, (hashlib.sha256(data).hexdigest() if data is not None else None)

    def _staged(self, key: str, data: bytes) -> Path:
        """Write `data` to a temp file beside `key` (same filesystem, so link/rename are atomic)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return Path(tmp)

    def write(self, key: str, data: bytes) -> None:
        os.replace(self._staged(key, data), self._path(key))

    def create(self, key: str, data: bytes) -> bool:
        tmp = self._staged(key, data)
        try:
            os.link(tmp, self._path(key))  # fails if the key exists: exclusive and complete
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink()

    def replace_if(self, key: str, data: bytes, token: str | None) -> bool:
        with self._lock(key):
            if self.read_versioned(key)[1] != token:
                return False
            self.write(key, data)
            return True

    @contextmanager
    def _lock(self, key: str):
        lock_path = self._path(key).with_name(f".{self._path(key).name}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def children(self, prefix: str) -> list[str]:
        path = self._path(prefix) if prefix else self.root
        if not self.root.is_dir():
            raise StoreUnavailable(f"adapter store {self.url} is gone")
        try:
            return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self.url}/{prefix}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot delete {self.url}/{key}: {exc}") from exc

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)
