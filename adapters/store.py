"""The adapter store: immutable versions, movable aliases, verified fetches.

Layout (DESIGN.md), the same on every backend:

    <root>/<name>/v<N>/adapter_config.json
    <root>/<name>/v<N>/adapter_model.safetensors
    <root>/<name>/v<N>/manifest.json   ← written last: its presence commits v<N>
    <root>/<name>/aliases.json         ← {"latest": 3, "prod": 2}, compare-and-swap

A publisher first claims `v<N>/.claim` with an exclusive create, so racing
publishers never share a number; a publish that dies before its manifest
leaves a claimed, invisible version that readers skip. Deleting a version
keeps its claim as a tombstone, so a number is never given out twice.
"""

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loraplex.adapters.backend import Backend
from loraplex.adapters.errors import (
    AdapterNotFound,
    AdapterNotServable,
    AliasConflict,
    IntegrityError,
    InvalidReference,
    VersionInUse,
)
from loraplex.adapters.fingerprint import fingerprint_base_model
from loraplex.adapters.manifest import BaseModelInfo, FileEntry, Manifest
from loraplex.adapters.refs import LATEST, AdapterRef, check_name
from loraplex.adapters.validate import ADAPTER_FILES, load_adapter_config, validate_adapter_dir

MANIFEST = "manifest.json"
ALIASES = "aliases.json"
CLAIM = ".claim"
DEFAULT_STORE = "./.loraplex/adapters"
CAS_ATTEMPTS = 50
VERSION_DIR = re.compile(r"v([0-9]+)")


def _as_ref(ref: str | AdapterRef) -> AdapterRef:
    return ref if isinstance(ref, AdapterRef) else AdapterRef.parse(ref)


def _version_numbers(children: list[str]) -> list[int]:
    """`v3` → 3; anything else in a name's folder (aliases.json, strays) is ignored."""
    return sorted(int(m[1]) for c in children if (m := VERSION_DIR.fullmatch(c)))


def _is_name(text: str) -> bool:
    try:
        return bool(check_name(text))
    except InvalidReference:
        return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Store:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.url = backend.url

    # -- reading ---------------------------------------------------------------

    def list_names(self) -> list[str]:
        # Skip what cannot be an adapter (a volume's lost+found, a stray README).
        return [n for n in self.backend.children("") if _is_name(n) and self.list_versions(n)]

    def list_versions(self, name: str) -> list[int]:
        """Committed versions only: a version without its manifest does not exist."""
        check_name(name)
        numbers = _version_numbers(self.backend.children(name))
        return [n for n in numbers if self.backend.read(f"{name}/v{n}/{MANIFEST}") is not None]

    def aliases(self, name: str) -> dict[str, int]:
        check_name(name)
        return self._parse_aliases(name, self.backend.read(f"{name}/{ALIASES}"))

    def _parse_aliases(self, name: str, data: bytes | None) -> dict[str, int]:
        try:
            return json.loads(data) if data else {}
        except ValueError as exc:
            raise IntegrityError(f"{self.url}/{name}/{ALIASES} is corrupt: {exc}") from exc

    def resolve(self, ref: str | AdapterRef) -> Manifest:
        ref = _as_ref(ref)
        version = ref.version
        if version is None:
            alias = ref.alias or LATEST
            version = self.aliases(ref.name).get(alias)
            if version is None:
                raise AdapterNotFound(f"adapter '{ref}' does not exist in {self.url}")
        data = self.backend.read(f"{ref.name}/v{version}/{MANIFEST}")
        if data is None:
            raise AdapterNotFound(f"adapter '{ref.name}@{version}' does not exist in {self.url}")
        try:
            return Manifest.model_validate_json(data)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise IntegrityError(
                f"the manifest of {ref.name}@{version} in {self.url} is corrupt: "
                f"{str(exc).splitlines()[0]}"
            ) from exc

    # -- publishing ------------------------------------------------------------

    def publish(
        self,
        src_dir: Path,
        name: str,
        *,
        aliases: Sequence[str] = (),
        base_model: Path | None = None,
        training: dict[str, Any] | None = None,
        description: str | None = None,
        max_rank: int = 16,
    ) -> Manifest:
        """Validate `src_dir`, store it as the next version of `name`, move `latest` and aliases."""
        check_name(name)
        for alias in aliases:
            check_name(alias, "alias")
        src_dir = Path(src_dir)
        lora = validate_adapter_dir(src_dir, base_model=base_model, max_rank=max_rank)
        blobs = {f: (src_dir / f).read_bytes() for f in ADAPTER_FILES}
        base = self._base_info(src_dir, base_model)
        version = self._claim_next_version(name)
        for file, data in blobs.items():
            self.backend.write(f"{name}/v{version}/{file}", data)
        manifest = Manifest(
            name=name,
            version=version,
            base=base,
            lora=lora,
            files={f: FileEntry(sha256=_sha256(d), size=len(d)) for f, d in blobs.items()},
            training=training,
            description=description,
        )
        if not self.backend.create(
            f"{name}/v{version}/{MANIFEST}", manifest.model_dump_json(indent=2).encode()
        ):
            raise AliasConflict(f"{name}@{version} was committed by someone else")
        self._update_aliases(name, lambda current: _after_publish(current, version, aliases))
        return manifest

    def _base_info(self, src_dir: Path, base_model: Path | None) -> BaseModelInfo:
        if base_model is not None:
            return fingerprint_base_model(Path(base_model))
        named = load_adapter_config(src_dir).get("base_model_name_or_path") or "unknown"
        return BaseModelInfo(id=Path(named).name or named, fingerprint=None)

    def _claim_next_version(self, name: str) -> int:
        version = max(_version_numbers(self.backend.children(name)), default=0) + 1
        while not self.backend.create(f"{name}/v{version}/{CLAIM}", b""):
            version += 1
        return version

    # -- aliases -----------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> None:
        check_name(alias, "alias")
        if version not in self.list_versions(name):
            raise AdapterNotFound(f"adapter '{name}@{version}' does not exist in {self.url}")
        self._update_aliases(name, lambda current: {**current, alias: version})

    def _update_aliases(self, name: str, change) -> dict[str, int]:
        key = f"{name}/{ALIASES}"
        for _ in range(CAS_ATTEMPTS):
            data, token = self.backend.read_versioned(key)
            updated = change(self._parse_aliases(name, data))
            if self.backend.replace_if(key, json.dumps(updated, sort_keys=True).encode(), token):
                return updated
        raise AliasConflict(f"could not update the aliases of '{name}': too many concurrent moves")

    # -- deleting ---------------------------------------------------------------

    def delete(self, ref: str | AdapterRef, *, force: bool = False) -> None:
        manifest = self.resolve(ref)
        name, version = manifest.name, manifest.version
        pointing = sorted(a for a, v in self.aliases(name).items() if v == version)
        if pointing and not force:
            raise VersionInUse(
                f"{name}@{version} is the target of alias(es) {', '.join(pointing)}; "
                "move them first or pass --force"
            )
        # Uncommit first (the manifest), so a reader never sees a half-deleted
        # version. The claim stays as a tombstone: the number is never reused, so
        # `name@N` always means the same weights (vLLM and fetch caches key on it).
        self.backend.delete(f"{name}/v{version}/{MANIFEST}")
        for file in manifest.files:
            self.backend.delete(f"{name}/v{version}/{file}")
        remaining = self.list_versions(name)

        def _drop(current: dict[str, int]) -> dict[str, int]:
            kept = {a: v for a, v in current.items() if v != version}
            if current.get(LATEST) == version and remaining:
                kept[LATEST] = max(remaining)
            return kept

        self._update_aliases(name, _drop)

    # -- verifying and fetching -----------------------------------------------

    def _verified_blobs(self, manifest: Manifest) -> dict[str, bytes]:
        blobs = {}
        for file, entry in sorted(manifest.files.items()):
            data = self.backend.read(f"{manifest.name}/v{manifest.version}/{file}")
            if data is None:
                raise IntegrityError(f"{manifest.ref}: {file} is missing from the store")
            if len(data) != entry.size or _sha256(data) != entry.sha256:
                raise IntegrityError(
                    f"{manifest.ref}: {file} does not match its manifest (sha256 "
                    f"{_sha256(data)[:12]}, expected {entry.sha256[:12]}); refusing it"
                )
            blobs[file] = data
        return blobs

    def verify(self, ref: str | AdapterRef, *, base_model: Path | None = None) -> Manifest:
        """Check every hash, then that the stored adapter is servable (on `base_model`)."""
        manifest = self.resolve(ref)
        blobs = self._verified_blobs(manifest)
        if base_model is not None:
            ours = fingerprint_base_model(Path(base_model)).fingerprint
            if manifest.base.fingerprint not in (None, ours):
                raise AdapterNotServable(
                    f"{manifest.ref} was trained for base model '{manifest.base.id}', "
                    f"not {base_model}"
                )
        with tempfile.TemporaryDirectory() as tmp:
            for file, data in blobs.items():
                (Path(tmp) / file).write_bytes(data)
            # With a base, the tensor shapes are checked too: a version published
            # without one has no fingerprint, and only its shapes can tell.
            validate_adapter_dir(
                Path(tmp), base_model=base_model, max_rank=max(manifest.lora.r, 16)
            )
        return manifest

    def fetch(self, ref: str | AdapterRef, cache_dir: Path) -> Path:
        """`<cache_dir>/<name>/v<N>`, every hash verified; a complete entry is reused."""
        manifest = self.resolve(ref)
        target = Path(cache_dir) / manifest.name / f"v{manifest.version}"
        if (target / MANIFEST).is_file():
            return target
        blobs = self._verified_blobs(manifest)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
        try:
            for file, data in blobs.items():
                (staging / file).write_bytes(data)
            (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2))
            try:
                os.rename(staging, target)
            except OSError:
                if not (target / MANIFEST).is_file():  # not a concurrent fetcher's entry
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def pull(self, ref: str | AdapterRef, out_dir: Path) -> Manifest:
        """Write a verified copy of a version's adapter files to `out_dir`."""
        manifest = self.resolve(ref)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for file, data in self._verified_blobs(manifest).items():
            (out_dir / file).write_bytes(data)
        return manifest


def _after_publish(current: dict[str, int], version: int, aliases: Sequence[str]) -> dict[str, int]:
    # Racing publishers may commit out of order: latest only moves forward.
    updated = {**current, LATEST: max(version, current.get(LATEST, 0))}
    updated.update({alias: version for alias in aliases})
    return updated


def open_store(url: str | None = None) -> Store:
    """Open `s3://bucket/prefix`, `file:///path` or a plain path.

    Default: $LORAPLEX_STORE, else ./.loraplex/adapters.
    """
    url = url or os.environ.get("LORAPLEX_STORE") or DEFAULT_STORE
    if url.startswith("s3://"):
        from loraplex.adapters.s3 import S3Backend

        return Store(S3Backend(url))
    from loraplex.adapters.local import LocalBackend

    return Store(LocalBackend(Path(url.removeprefix("file://"))))
