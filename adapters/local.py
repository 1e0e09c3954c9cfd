"""The local-directory backend: the embedded default (`file:///path` or a path).

Opening a store creates its root (an empty directory is an empty store); a
root that disappears afterwards (a volume unmounted, a directory removed) is
`StoreUnavailable` on every read and write, never an empty store: a gateway
must answer 503, not 404, and a publisher must not recreate it by accident.
"""

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loraplex.adapters.backend import Backend
from loraplex.adapters.errors import StoreUnavailable

# A key under a path that is a file (`notes.txt/aliases.json`) is simply absent.
_ABSENT = (FileNotFoundError, NotADirectoryError)


class LocalBackend(Backend):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = f"file://{self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create adapter store {self.url}: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root / key

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise StoreUnavailable(f"adapter store {self.url} is gone")

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except _ABSENT:
            self._check_root()
            return None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {self.url}/{key}: {exc}") from exc

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        data = self.read(key)
        return data, (hashlib.sha256(data).hexdigest() if data is not None else None)

    def _staged(self, key: str, data: bytes) -> Path:
        """Write `data` to a temp file beside `key` (same filesystem, so link/rename are atomic)."""
        self._check_root()
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {self.url}/{key}: {exc}") from exc
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
    def _lock(self, key: str) -> Iterator[None]:
        """An exclusive lock beside `key`, held by every compare-and-swap of it."""
        self._check_root()
        lock_path = self._path(key).with_name(f".{self._path(key).name}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def children(self, prefix: str) -> list[str]:
        self._check_root()
        try:
            entries = self._path(prefix).iterdir() if prefix else self.root.iterdir()
            return sorted(p.name for p in entries if not p.name.startswith("."))
        except _ABSENT:
            return []
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self.url}/{prefix}: {exc}") from exc

    def walk(self, prefix: str) -> list[str]:
        self._check_root()
        top = self._path(prefix) if prefix else self.root
        keys = []
        # os.walk skips folders that vanish under it (a concurrent delete): fine for a listing.
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = Path(folder).relative_to(top)
            keys += [(rel / f).as_posix() for f in files if not f.startswith(".")]
        return sorted(keys)

    def walk_stamped(self, prefix: str) -> dict[str, str]:
        self._check_root()
        top = str(self._path(prefix) if prefix else self.root)
        stamps: dict[str, str] = {}
        # os.scandir on plain strings: a poll of 10,000 names stays a fraction
        # of a second (pathlib costs more than the syscalls here).
        stack = [(top, "")]
        while stack:
            folder, rel = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):  # deleted under the listing
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                key = f"{rel}{entry.name}"
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, key + "/"))
                    else:
                        st = entry.stat(follow_symlinks=False)
                        stamps[key] = f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"
                except FileNotFoundError:
                    continue
        return stamps

    def list_folder(self, prefix: str, start_after: str = "") -> list[str]:
        self._check_root()
        try:
            with os.scandir(self._path(prefix)) as entries:
                # Dot-names are this backend's own staged files and locks, not objects.
                names = [
                    e.name
                    for e in entries
                    if e.name > start_after and not e.name.startswith(".") and e.is_file()
                ]
        except _ABSENT:
            return []
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self.url}/{prefix}: {exc}") from exc
        return sorted(names)

    def folders(self, after: str = "") -> list[str]:
        self._check_root()
        try:
            with os.scandir(self.root) as entries:
                return sorted(
                    e.name
                    for e in entries
                    if e.name > after and not e.name.startswith(".") and e.is_dir()
                )
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self.url}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except NotADirectoryError:
            pass
        except OSError as exc:
            raise StoreUnavailable(f"cannot delete {self.url}/{key}: {exc}") from exc

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)
