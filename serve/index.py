"""The gateway's view of the adapter store: names and their aliases.

Requests name adapters as `name`, `name:alias` or `name@N`; the index turns
each into an immutable `name@N` (DESIGN.md decision 2). It is refreshed by a
poller (`watch`) and, for a name it has never seen, read through from the
store, so a freshly published adapter answers on its first request.

A poll reads the store's change feed (`adapters/changes.py`): one short
listing, then only the changed names' aliases. A full walk of the store
runs first, and then every `full_every` seconds (at least ten times as long
as the last walk took), to catch what the feed cannot report.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from loraplex.adapters import AdapterNotFound, AdapterRef, Store, StoreUnavailable
from loraplex.adapters.changes import ChangeFeed

logger = logging.getLogger(__name__)

LATEST = "latest"
READERS = 16  # parallel aliases.json reads when many changed (the first refresh)
FULL_EVERY = 60.0  # seconds between full walks of the store, at least


@dataclass(frozen=True)
class AdapterVersion:
    name: str
    version: int

    @property
    def lora_name(self) -> str:
        """The name vLLM holds this version under: never reused for other weights."""
        return f"{self.name}@{self.version}"


def not_found(ref: AdapterRef) -> AdapterNotFound:
    """The one answer for an adapter a client cannot have, missing or not theirs."""
    return AdapterNotFound(f"adapter '{ref}' does not exist")


class AdapterIndex:
    def __init__(
        self, store: Store, *, miss_ttl: float = 1.0, full_every: float = FULL_EVERY
    ) -> None:
        self.store = store
        self._feed = ChangeFeed(store.backend)
        self._full_every = full_every
        self._last_walk = -float("inf")
        self._walk_seconds = 0.0
        self.last_refresh_walked = False
        self._aliases: dict[str, dict[str, int]] = {}
        self._known_versions: set[AdapterVersion] = set()
        # A name the store lacked is not re-read for `miss_ttl` seconds, so a
        # client sending random names cannot turn each request into store I/O.
        self._misses: dict[str, float] = {}
        self._miss_ttl = miss_ttl
        self.alias_moves = 0
        self.store_reachable = True
        self._refreshed = False
        self._stamps: dict[str, str | None] = {}
        # Versions an alias moved to (a publish moves `latest`) since the last
        # `take_moved`, for the gateway to prefetch; the first refresh adds none.
        self._moved: list[AdapterVersion] = []

    def names(self) -> list[str]:
        return sorted(self._aliases)

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self._aliases.get(name, {}))

    def refresh(self, *, walk: bool = False) -> None:
        """Bring every name's aliases up to date from the store (blocking I/O);
        `walk` walks the whole store even if no full walk is due."""
        due = max(self._full_every, 10 * self._walk_seconds)
        walk = walk or not self._refreshed or time.monotonic() - self._last_walk >= due
        try:
            fresh = self._walk() if walk else self._follow_feed()
        except StoreUnavailable:
            self.store_reachable = False
            raise
        self.store_reachable = True
        self.last_refresh_walked = walk
        for name, aliases in fresh.items():
            old = self._aliases.get(name, {})
            self.alias_moves += sum(1 for a, v in aliases.items() if a in old and old[a] != v)
            if self._refreshed:
                targets = {v for a, v in aliases.items() if old.get(a) != v}
                self._moved += [AdapterVersion(name, v) for v in sorted(targets)]
        self._aliases = fresh
        self._misses.clear()
        self._refreshed = True

    def _walk(self) -> dict[str, dict[str, int]]:
        started = time.monotonic()
        self._feed.changed_names()  # first: a change during the walk is reported next time
        stamps = self.store.alias_stamps()
        fresh = self._read_changed(stamps)
        self._stamps = stamps
        self._last_walk = time.monotonic()
        self._walk_seconds = self._last_walk - started
        return fresh

    def _follow_feed(self) -> dict[str, dict[str, int]]:
        changed = sorted(self._feed.changed_names())
        fresh = dict(self._aliases)
        for name, aliases in zip(changed, self._read_many(changed), strict=True):
            self._stamps.pop(name, None)  # the next walk re-reads it
            if aliases or self.store.list_versions(name):
                fresh[name] = aliases
            else:  # its last version was deleted
                fresh.pop(name, None)
        return dict(sorted(fresh.items()))

    def _read_many(self, names: list[str]) -> list[dict[str, int]]:
        if len(names) > 1:  # on S3 each read is a round trip
            with ThreadPoolExecutor(READERS) as pool:
                return list(pool.map(self.store.aliases, names))
        return [self.store.aliases(name) for name in names]

    def _read_changed(self, stamps: dict[str, str | None]) -> dict[str, dict[str, int]]:
        """Each name's aliases, read only where aliases.json changed since the
        last refresh: with thousands of names a poll is one listing, and the
        first one reads in parallel (on S3 each read is a round trip)."""
        fresh: dict[str, dict[str, int]] = {}
        changed = []
        for name, stamp in stamps.items():
            if stamp is None:
                fresh[name] = {}
            elif stamp == self._stamps.get(name) and name in self._aliases:
                fresh[name] = self._aliases[name]
            else:
                changed.append(name)
        fresh.update(zip(changed, self._read_many(changed), strict=True))
        return dict(sorted(fresh.items()))

    def take_moved(self) -> list[AdapterVersion]:
        """Versions aliases moved to since the last call, each once, oldest move first."""
        moved, self._moved = list(dict.fromkeys(self._moved)), []
        return moved

    def resolve(self, ref: AdapterRef) -> AdapterVersion:
        """`name`, `name:alias` or `name@N` → the version it means now (blocking I/O on a miss)."""
        if ref.version is not None:
            pinned = AdapterVersion(ref.name, ref.version)
            if pinned not in self._known_versions:
                try:
                    self.store.resolve(ref)
                except AdapterNotFound:
                    raise not_found(ref) from None
                self._known_versions.add(pinned)  # versions are immutable: safe to remember
            return pinned
        alias = ref.alias or LATEST
        version = self._aliases.get(ref.name, {}).get(alias)
        if version is None:
            version = self._read_through(ref.name).get(alias)
        if version is None:
            raise not_found(ref)
        return AdapterVersion(ref.name, version)

    def _read_through(self, name: str) -> dict[str, int]:
        if time.monotonic() - self._misses.get(name, -1e9) < self._miss_ttl:
            return {}
        aliases = self.store.aliases(name)
        if aliases:
            self._aliases[name] = aliases
        else:
            self._misses[name] = time.monotonic()
        return aliases


async def watch(
    index: AdapterIndex,
    interval: float,
    on_moved: Callable[[list[AdapterVersion]], Awaitable[None]] | None = None,
) -> None:
    """Poll the store forever; a store outage keeps the last view and is logged once.
    `on_moved` hears of the versions aliases moved to (prefetching)."""
    was_reachable = True
    while True:
        started = time.monotonic()
        try:
            await asyncio.to_thread(index.refresh)
            if on_moved is not None and (moved := index.take_moved()):
                await on_moved(moved)
            if not was_reachable:
                logger.info("adapter store %s is reachable again", index.store.url)
            was_reachable = True
        except StoreUnavailable as exc:
            if was_reachable:
                logger.warning("adapter store unreachable, serving from cache: %s", exc)
            was_reachable = False
        except Exception:  # keep watching whatever one poll hit
            logger.exception("adapter store poll failed")
        # A store so large that a poll takes a while is polled less often, so
        # polling never takes more than a third of a core or of the store's time.
        # Full walks are spaced by the index itself.
        took = 0.0 if index.last_refresh_walked else time.monotonic() - started
        await asyncio.sleep(max(interval, 2 * took))
