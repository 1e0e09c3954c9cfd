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

import contextlib
import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from loraplex.adapters import cache, changes, snapshot
from loraplex.adapters.backend import Backend
from loraplex.adapters.errors import (
    AdapterNotFound,
    AdapterNotServable,
    AliasConflict,
    IntegrityError,
    InvalidReference,
    StoreUnavailable,
    VersionInUse,
)
from loraplex.adapters.fingerprint import fingerprint_base_model
from loraplex.adapters.manifest import BaseModelInfo, FileEntry, Manifest
from loraplex.adapters.refs import LATEST, AdapterRef, check_name, is_alias_map
from loraplex.adapters.validate import (
    CONFIG_FILE,
    parse_config,
    read_adapter_files,
    validate_adapter_files,
)

MANIFEST = "manifest.json"
ALIASES = "aliases.json"
CLAIM = ".claim"
DEFAULT_STORE = "./.loraplex/adapters"
CAS_ATTEMPTS = 50
ANY = object()  # set_alias(expect=ANY): move the alias wherever it points now
VERSION_DIR = re.compile(r"v([0-9]+)")
# A committed version, as a key under the store's root: `chat/v3/manifest.json`.
COMMITTED = re.compile(rf"([^/]+)/v([0-9]+)/{re.escape(MANIFEST)}")


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
        """Names with at least one committed version, from one listing of the store."""
        names = {m[1] for key in self.backend.walk("") if (m := COMMITTED.fullmatch(key))}
        # Skip what cannot be an adapter (a volume's lost+found, a stray folder).
        return sorted(n for n in names if _is_name(n))

    def catalog(self) -> dict[str, list[int]]:
        """Every name → its committed versions, sorted, from one listing of the store."""
        versions: dict[str, list[int]] = {}
        for key in self.backend.walk_stamped(""):
            if (m := COMMITTED.fullmatch(key)) and _is_name(m[1]):
                versions.setdefault(m[1], []).append(int(m[2]))
        return {n: sorted(versions[n]) for n in sorted(versions)}

    def catalog_page(
        self, after: str = "", limit: int = 100
    ) -> tuple[dict[str, tuple[list[int], dict[str, int]]], bool]:
        """Up to `limit` names after `after` → (their committed versions, sorted;
        their aliases), and whether more follow: a listing of the top-level
        names, then a listing and an aliases read per name on the page, not a
        walk of every key in the store. The names are read
        `backend.parallel_reads` at a time (on S3 each read is a round trip)."""
        names = iter([name for name in self.backend.folders(after) if _is_name(name)])
        page: dict[str, tuple[list[int], dict[str, int]]] = {}
        with self.backend.reads_at_once(limit + 1) as read:
            # One name past the limit says whether more follow.
            while batch := list(itertools.islice(names, limit + 1 - len(page))):
                for name, entry in zip(batch, read(self._catalog_entry, batch), strict=True):
                    if entry is None:
                        continue  # a folder without a committed version is no adapter
                    if len(page) == limit:
                        return page, True
                    page[name] = entry
        return page, False

    def _catalog_entry(self, name: str) -> tuple[list[int], dict[str, int]] | None:
        versions = self.list_versions(name)
        return (versions, self.aliases(name)) if versions else None

    def alias_stamps(self) -> dict[str, str | None]:
        """Every name with a committed version → its aliases.json stamp (None:
        no aliases), from one listing: a poller re-reads only what changed."""
        stamps = self.backend.walk_stamped("")
        names = {m[1] for key in stamps if (m := COMMITTED.fullmatch(key))}
        return {n: stamps.get(f"{n}/{ALIASES}") for n in sorted(names) if _is_name(n)}

    def list_versions(self, name: str) -> list[int]:
        """Committed versions only: a version without its manifest does not exist."""
        check_name(name)
        keys = self.backend.walk(name)
        return sorted(int(m[2]) for k in keys if (m := COMMITTED.fullmatch(f"{name}/{k}")))

    def aliases(self, name: str) -> dict[str, int]:
        return self.aliases_with_digest(name)[0]

    def aliases_with_digest(self, name: str) -> tuple[dict[str, int], str]:
        """`aliases`, and the MD5 of the bytes they came from (for `snapshot`)."""
        check_name(name)
        data = self.backend.read(f"{name}/{ALIASES}")
        return self._parse_aliases(name, data), snapshot.digest(data)

    def _parse_aliases(self, name: str, data: bytes | None) -> dict[str, int]:
        where = f"{self.url}/{name}/{ALIASES}"
        try:
            aliases = json.loads(data) if data else {}
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            raise IntegrityError(f"{where} is corrupt: {exc}") from exc
        if not is_alias_map(aliases):
            raise IntegrityError(f"{where} is corrupt: not an object of alias → version")
        return aliases

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
        # Read once: the bytes validated are the bytes stored and hashed, even if
        # a trainer rewrites the folder meanwhile.
        blobs = read_adapter_files(Path(src_dir))
        lora = validate_adapter_files(blobs, base_model=base_model, max_rank=max_rank)
        base = self._base_info(parse_config(blobs[CONFIG_FILE]), base_model)
        version = self._claim_next_version(name)
        try:
            for file, data in blobs.items():
                self.backend.write(f"{name}/v{version}/{file}", data)
        except BaseException:
            self._abandon(name, version, blobs)
            raise
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

    def _base_info(self, config: dict, base_model: Path | None) -> BaseModelInfo:
        if base_model is not None:
            return fingerprint_base_model(Path(base_model))
        named = config.get("base_model_name_or_path")
        named = named if isinstance(named, str) and named else "unknown"
        # A path's last part is the model's name; a hub id (`org/model`) stays whole.
        is_path = named.startswith(("/", ".", "~")) or Path(named).is_dir()
        return BaseModelInfo(id=Path(named).name if is_path else named)

    def _abandon(self, name: str, version: int, blobs: dict[str, bytes]) -> None:
        """Best effort: remove a failed publish's files; its claim stays, the number unused."""
        for file in blobs:
            try:
                self.backend.delete(f"{name}/v{version}/{file}")
            except StoreUnavailable:
                return  # the store is down: the leftovers are invisible without a manifest

    def _claim_next_version(self, name: str) -> int:
        version = max(_version_numbers(self.backend.children(name)), default=0) + 1
        while not self.backend.create(f"{name}/v{version}/{CLAIM}", b""):
            version += 1
        return version

    # -- aliases -----------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int, *, expect: object = ANY) -> None:
        """Point `name:alias` at `version`; with `expect`, only if it points there now
        (None: only if the alias does not exist), else `AliasConflict`."""
        check_name(name)
        check_name(alias, "alias")
        manifest_key = f"{name}/v{version}/{MANIFEST}"
        missing = AdapterNotFound(f"adapter '{name}@{version}' does not exist in {self.url}")

        def _point(current: dict[str, int]) -> dict[str, int]:
            if expect is not ANY and current.get(alias) != expect:
                raise AliasConflict(
                    f"{name}:{alias} was moved to {current.get(alias)} meanwhile "
                    f"(expected {expect}); not moving it"
                )
            if self.backend.read(manifest_key) is None:
                raise missing
            return {**current, alias: version}

        self._update_aliases(name, _point)
        # A delete can leave aliases.json byte for byte as it was, so the
        # compare-and-swap above cannot see it (ABA). A delete removes the manifest
        # before it rewrites the aliases: if the manifest is still here, that
        # rewrite comes later and drops this alias itself; if not, undo it here.
        if self.backend.read(manifest_key) is None:
            self._update_aliases(
                name,
                lambda current: {a: v for a, v in current.items() if (a, v) != (alias, version)},
            )
            raise missing

    def _update_aliases(
        self, name: str, change: Callable[[dict[str, int]], dict[str, int]]
    ) -> dict[str, int]:
        key = f"{name}/{ALIASES}"
        for _ in range(CAS_ATTEMPTS):
            data, token = self.backend.read_versioned(key)
            updated = change(self._parse_aliases(name, data))
            if self.backend.replace_if(key, json.dumps(updated, sort_keys=True).encode(), token):
                # The move is made; if the feed's entry is lost, readers' full walk sees it.
                with contextlib.suppress(StoreUnavailable):
                    changes.record(self.backend, name)
                return updated
        raise AliasConflict(f"could not update the aliases of '{name}': too many concurrent moves")

    # -- deleting ---------------------------------------------------------------

    def delete(self, ref: str | AdapterRef, *, force: bool = False) -> Manifest:
        """Delete one version (refused while an alias points at it, unless `force`)."""
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
        self.backend.delete_tree(f"{name}/v{version}/evaluations")  # see evaluations.py
        remaining = self.list_versions(name)

        def _drop(current: dict[str, int]) -> dict[str, int]:
            kept = {a: v for a, v in current.items() if v != version}
            if current.get(LATEST) == version and remaining:
                kept[LATEST] = max(remaining)
            return kept

        self._update_aliases(name, _drop)
        return manifest

    # -- verifying and fetching -----------------------------------------------

    def _verified_blobs(self, manifest: Manifest) -> dict[str, bytes]:
        blobs = {}
        for file, entry in sorted(manifest.files.items()):
            data = self.backend.read(f"{manifest.name}/v{manifest.version}/{file}")
            if data is None:
                if self.backend.read(f"{manifest.name}/v{manifest.version}/{MANIFEST}") is None:
                    raise AdapterNotFound(f"adapter '{manifest.ref}' was deleted from {self.url}")
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
        # With a base, the tensor shapes are checked too: a version published
        # without one has no fingerprint, and only its shapes can tell.
        validate_adapter_files(blobs, base_model=base_model, max_rank=max(manifest.lora.r, 16))
        return manifest

    def fetch(self, ref: str | AdapterRef, cache_dir: Path) -> Path:
        """`<cache_dir>/<name>/v<N>`, every hash verified; a complete entry is reused.

        Safe to call concurrently for the same version (see cache.py).
        """
        return self.fetch_resolved(self.resolve(ref), cache_dir)

    def fetch_resolved(self, manifest: Manifest, cache_dir: Path) -> Path:
        """`fetch` for a version already resolved: its manifest is not read again."""
        entry = cache.entry_path(Path(cache_dir), manifest)
        if cache.is_complete(entry, manifest):
            return entry
        return cache.install(entry, manifest, self._verified_blobs(manifest))

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
    scheme = urlparse(url).scheme
    if scheme == "s3":
        from loraplex.adapters.s3 import S3Backend

        return Store(S3Backend(url))
    from loraplex.adapters.local import LocalBackend

    if scheme == "file":
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise StoreUnavailable(f"store URL {url!r} names a remote host; use file:///path")
        return Store(LocalBackend(Path(unquote(parsed.path))))
    if "://" in url:
        raise StoreUnavailable(
            f"unsupported store URL {url!r}: use a path, file:///path or s3://bucket/prefix"
        )
    return Store(LocalBackend(Path(url)))
