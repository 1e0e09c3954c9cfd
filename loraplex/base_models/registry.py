"""Known base models by name, prepared once into a cache directory.

`serve` and `train` take a model path; the command line calls
`resolve_base_model` first, so `--base-model` may be a directory, a known
name, or nothing (the embedded default, SmolLM2-135M-Instruct).
"""

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from loraplex.base_models.errors import BaseModelUnavailable

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"


def _make_tiny(out_dir: Path) -> Path:
    from loraplex.base_models.tiny import make_tiny_model

    return make_tiny_model(out_dir)


def _make_smollm2(out_dir: Path) -> Path:
    from loraplex.base_models.smollm2 import make_smollm2

    return make_smollm2(out_dir)


MAKERS: dict[str, Callable[[Path], Path]] = {
    "tiny": _make_tiny,
    DEFAULT_BASE_MODEL: _make_smollm2,
}


def cache_root() -> Path:
    return Path(os.environ.get("LORAPLEX_CACHE_DIR", Path.home() / ".cache" / "loraplex"))


def make_model(name: str, out_dir: Path) -> Path:
    """Write the named model to `out_dir`, all or nothing (temp dir, then rename)."""
    if name not in MAKERS:
        raise BaseModelUnavailable(f"unknown base model '{name}'; known: {', '.join(MAKERS)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BaseModelUnavailable(f"{out_dir} exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        MAKERS[name](staging)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def resolve_base_model(
    name_or_path: str | Path | None, cache_dir: str | Path | None = None
) -> Path:
    """A directory as given, or a known model prepared once into the cache.

    Preparation goes through a temporary directory and a rename, so a killed
    preparer never leaves a half model under `models/<name>`; concurrent
    preparers on one machine wait for each other on a lock file, and on
    filesystems without locks the rename still lets exactly one of them win.
    """
    name = str(name_or_path) if name_or_path else DEFAULT_BASE_MODEL
    if Path(name).is_dir():
        return Path(name)
    if name not in MAKERS:
        raise BaseModelUnavailable(
            f"base model '{name}' is neither a directory nor a known name ({', '.join(MAKERS)})"
        )
    target = (Path(cache_dir) if cache_dir else cache_root()) / "models" / name
    if (target / "config.json").is_file():
        return target
    try:
        with _preparing(target):
            if not (target / "config.json").is_file():  # else prepared while we waited
                make_model(name, target)
    except (OSError, BaseModelUnavailable) as exc:
        if (target / "config.json").is_file():
            return target  # a concurrent preparer finished first
        if isinstance(exc, BaseModelUnavailable):
            raise
        raise BaseModelUnavailable(f"cannot prepare {name} in {target}: {exc}") from exc
    return target


@contextmanager
def _preparing(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on `.<name>.lock` beside `target` (released if we die)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
