"""The gateway's view of the adapter store: names and their aliases.

Requests name adapters as `name`, `name:alias` or `name@N`; the index turns
each into an immutable `name@N` (DESIGN.md decision 2). It is refreshed by a
poller (`watch`) and, for a name it has never seen, read through from the
store, so a freshly published adapter answers on its first request.

A poll reads the store's change feed (`adapters/changes.py`): one short
listing, then only the changed names' aliases. A full walk of the store
runs first, and then every `full_every` seconds (at least ten times as long
as the last walk took), to catch what the feed cannot report.

The first walk starts from the store's alias snapshot (`adapters/snapshot.py`)
and reads only the names it does not vouch for; after a walk that had to
read many names, the index writes a fresh snapshot for the next cold start.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loraplex.adapters import AdapterNotFound, AdapterRef, Store, StoreUnavailable, snapshot
from loraplex.adapters.changes import ChangeFeed

logger = logging.getLogger(__name__)

LATEST = "latest"
FULL_EVERY = 60.0  # seconds between full walks of the store, at least
# Names read from the store since the last snapshot before a walk writes a new
# one: a small store is never written to, a large one at most once a walk.
SNAPSHOT_AFTER = 100


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
        self,
        store: Store,
        *,
        miss_ttl: float = 1.0,
        full_every: float = FULL_EVERY,
        snapshot_after: int = SNAPSHOT_AFTER,
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
        # name → (MD5 of the aliases.json bytes, the aliases read from them): the
        # snapshot's entries, each pair read together.
        self._read: snapshot.Entries = {}
        self._snapshot_after = snapshot_after
        self._read_since_snapshot = 0
        self._snapshot_wanted = True
        self.names_from_snapshot = 0

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
        if not self._refreshed:
            self._start_from_snapshot(stamps)
        fresh = self._read_changed(stamps)
        self._stamps = stamps
        self._write_snapshot_if_stale(stamps, fresh)
        self._last_walk = time.monotonic()
        self._walk_seconds = self._last_walk - started
        return fresh

    def _start_from_snapshot(self, stamps: dict[str, str | None]) -> None:
        """Take each name's aliases from the snapshot where the listing shows
        the very bytes the snapshot read: `_read_changed` then skips them."""
        vouched = {
            name: (md5, aliases)
            for name, (md5, aliases) in snapshot.read(self.store.backend).items()
            if snapshot.matches(stamps.get(name), md5)
        }
        for name, (_, aliases) in vouched.items():
            self._aliases[name], self._stamps[name] = aliases, stamps[name]
        self._read.update(vouched)
        self.names_from_snapshot = len(vouched)
        if vouched:
            logger.info(
                "adapter index: %d of %d names from the alias snapshot", len(vouched), len(stamps)
            )

    def _write_snapshot_if_stale(
        self, stamps: dict[str, str | None], fresh: dict[str, dict[str, int]]
    ) -> None:
        if not self._snapshot_wanted or self._read_since_snapshot < max(
            self._snapshot_after, len(fresh) // 100
        ):
            return
        entries = {
            name: pair
            for name, pair in self._read.items()
            if name in fresh and snapshot.matches(stamps.get(name), pair[0])
        }
        # Stamps that are not MD5s (a local store) would never vouch for an entry.
        self._snapshot_wanted = bool(entries) and snapshot.write(self.store.backend, entries)
        self._read_since_snapshot = 0
        if self._snapshot_wanted:
            logger.info("adapter index: wrote an alias snapshot of %d names", len(entries))

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
        with self.store.backend.reads_at_once(len(names)) as read:  # S3: round trips
            results = list(read(self.store.aliases_with_digest, names))
        for name, (aliases, md5) in zip(names, results, strict=True):
            self._read[name] = (md5, aliases)
        self._read_since_snapshot += len(names)
        return [aliases for aliases, _ in results]

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
