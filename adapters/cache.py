"""The local fetch cache: `<cache_dir>/<name>/v<N>`, installed whole or not at all.

An entry is a directory holding a version's files and its manifest, staged in
a temp directory beside it and renamed into place, so a reader (vLLM loading
the adapter) never sees a half-written entry and concurrent fetchers of the
same version end with one complete entry. An entry is reused only if its
manifest is the store's manifest and every file has its recorded size; anything
else (a store wiped and refilled, a file removed by hand) is replaced.
"""

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from loraplex.adapters.errors import IntegrityError
from loraplex.adapters.manifest import Manifest

MANIFEST = "manifest.json"


def entry_path(cache_dir: Path, manifest: Manifest) -> Path:
    return Path(cache_dir) / manifest.name / f"v{manifest.version}"


def is_complete(entry: Path, manifest: Manifest) -> bool:
    """The entry holds exactly this manifest's version (hashes were checked when it was staged)."""
    try:
        cached = Manifest.model_validate_json((entry / MANIFEST).read_bytes())
        sizes = {file: (entry / file).stat().st_size for file in manifest.files}
    except (OSError, ValueError):
        return False
    return cached == manifest and all(sizes[f] == e.size for f, e in manifest.files.items())


def install(entry: Path, manifest: Manifest, blobs: dict[str, bytes]) -> Path:
    """Write verified `blobs` and the manifest as `entry`, atomically."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=entry.parent))
    try:
        for file, data in blobs.items():
            (staging / file).write_bytes(data)
        (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2))
        for _ in range(5):
            try:
                os.rename(staging, entry)  # fails if a non-empty entry is there
                return entry
            except OSError:
                pass
            if is_complete(entry, manifest):  # a concurrent fetcher won: same bytes
                return entry
            _move_aside(entry)  # stale or broken: replace it
        raise IntegrityError(f"could not install {manifest.ref} into the cache at {entry}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_aside(entry: Path) -> None:
    """Rename `entry` out of the way (atomic), then remove it."""
    aside = entry.with_name(f".stale-{entry.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(entry, aside)
    except FileNotFoundError:  # another fetcher moved it already
        return
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
