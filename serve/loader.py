"""Fetch adapter versions into the local cache: verified, checked against the
served base, and fetched once even when many requests ask at the same moment."""

import asyncio
import logging
import time
from collections import defaultdict
from pathlib import Path

from loraplex.adapters import (
    AdapterNotServable,
    IntegrityError,
    Manifest,
    Store,
    StoreUnavailable,
)
from loraplex.serve.index import AdapterVersion
from loraplex.serve.metrics import GatewayMetrics

logger = logging.getLogger(__name__)


_REASONS = {
    AdapterNotServable: "not_servable",
    IntegrityError: "integrity",
    StoreUnavailable: "store_unavailable",
}


def _reason(exc: Exception) -> str:
    return next(reason for cls, reason in _REASONS.items() if isinstance(exc, cls))


class AdapterLoader:
    def __init__(
        self,
        store: Store,
        cache_dir: Path,
        base_fingerprint: str | None,
        metrics: GatewayMetrics,
    ) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.base_fingerprint = base_fingerprint
        self.metrics = metrics
        self._ready: dict[AdapterVersion, Path] = {}
        self._sizes: dict[AdapterVersion, int] = {}
        self._locks: defaultdict[AdapterVersion, asyncio.Lock] = defaultdict(asyncio.Lock)

    def local_path(self, adapter: AdapterVersion) -> Path | None:
        return self._ready.get(adapter)

    def size_of(self, adapter: AdapterVersion) -> int:
        """Bytes of the adapter's files (0 until fetched)."""
        return self._sizes.get(adapter, 0)

    def cached(self) -> set[AdapterVersion]:
        return set(self._ready)

    async def ensure_local(self, adapter: AdapterVersion, *, count: bool = True) -> Path:
        """The adapter's verified local directory, fetching it on first use.
        `count`: a request's use, for the cache hit and miss counters (a
        prefetch is not a request)."""
        if (path := self._ready.get(adapter)) is not None:
            if count:
                self.metrics.cache_hits.inc()
            return path
        async with self._locks[adapter]:
            if (path := self._ready.get(adapter)) is not None:
                if count:
                    self.metrics.cache_hits.inc()
                return path
            if count:
                self.metrics.cache_misses.inc()
            try:
                path, manifest = await self._fetch(adapter)
            except (AdapterNotServable, IntegrityError, StoreUnavailable) as exc:
                self.metrics.load_failures.labels(_reason(exc)).inc()
                raise
            self._ready[adapter] = path
            self._sizes[adapter] = sum(f.size for f in manifest.files.values())
            return path

    async def _fetch(self, adapter: AdapterVersion) -> tuple[Path, Manifest]:
        started = time.perf_counter()
        manifest = await asyncio.to_thread(self.store.resolve, adapter.lora_name)
        self.check_base(manifest)
        path = await asyncio.to_thread(self.store.fetch_resolved, manifest, self.cache_dir)
        seconds = time.perf_counter() - started
        self.metrics.fetch_seconds.observe(seconds)
        logger.info("fetched %s in %.3fs", adapter.lora_name, seconds)
        return path, manifest

    def check_base(self, manifest: Manifest) -> None:
        """Refuse an adapter trained for another base model, never apply it silently."""
        theirs = manifest.base.fingerprint
        if theirs is None or self.base_fingerprint is None:
            logger.warning(
                "%s@%d has no base fingerprint to check against the served base",
                manifest.name,
                manifest.version,
            )
            return
        if theirs != self.base_fingerprint:
            raise AdapterNotServable(
                f"adapter {manifest.name}@{manifest.version} was trained for base model "
                f"'{manifest.base.id}' (fingerprint {theirs[:12]}), not the base this server "
                f"serves (fingerprint {self.base_fingerprint[:12]})"
            )
