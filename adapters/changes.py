"""The store's change feed: which adapter names changed, without walking the store.

A gateway polls the store to learn of publishes and alias moves. Walking
the whole store costs one listing of every object: 10,000 adapters are about
50,000 keys, 6.8 s a poll on a local disk and 31 s on S3. The feed makes a
poll one short listing instead.

- **Writers** (`record`): after every successful `aliases.json` write
  (publish, alias move, delete), the store adds an empty object
  `.changes/<time_ns>~<name>~<random>`. The dot hides it from adapter
  listings. Entries older than `RETAIN` are pruned by writers, now and then.
- **Readers** (`ChangeFeed.changed_names`): list the entries after the
  cursor (`StartAfter` on S3), and report the names not seen before.

Two things can hide a change from the feed: a writer whose clock lags the
others, and a writer that dies between its `aliases.json` write and its
entry. The first is covered by listing `LOOKBACK` seconds before the cursor
each time, and forgetting seen entries only past that window. The second,
and stores written by a loraplex without the feed, are covered by the
reader's periodic full walk (`serve/index.py`): the feed makes polls cheap;
it is not the only source of truth.
"""

import secrets
import time

from loraplex.adapters.backend import Backend

CHANGES = ".changes"
RETAIN = 3600.0  # seconds an entry is kept: far longer than any reader's full-walk period
LOOKBACK = 30.0  # seconds of writer clock skew tolerated without waiting for a full walk
PRUNE_ONE_IN = 32  # writes between prunes, on average
_NS = 10**9


def _entry(at_ns: int, name: str) -> str:
    return f"{at_ns:020d}~{name}~{secrets.token_hex(4)}"


def _parse(entry: str) -> tuple[int, str] | None:
    at, _, rest = entry.partition("~")
    name, _, _ = rest.rpartition("~")
    if len(at) != 20 or not at.isascii() or not at.isdigit() or not name:
        return None  # a stray object in the folder
    return int(at), name


def record(backend: Backend, name: str) -> None:
    """Note that `name`'s aliases changed (after the write that changed them)."""
    backend.create(f"{CHANGES}/{_entry(time.time_ns(), name)}", b"")
    if secrets.randbelow(PRUNE_ONE_IN) == 0:
        prune(backend)


def prune(backend: Backend, retain: float = RETAIN) -> int:
    """Delete entries older than `retain` seconds; returns how many. Only the
    feed's own entries: anything else in the folder (a concurrent writer's
    staged file, say) is not its to delete."""
    cutoff = f"{time.time_ns() - int(retain * _NS):020d}"
    old = [e for e in backend.list_folder(CHANGES) if _parse(e) and e < cutoff]
    for entry in old:
        backend.delete(f"{CHANGES}/{entry}")
    return len(old)


class ChangeFeed:
    """One reader's position in the feed."""

    def __init__(self, backend: Backend, lookback: float = LOOKBACK) -> None:
        self.backend = backend
        self._lookback_ns = int(lookback * _NS)
        self._newest_ns: int | None = None
        self._seen: set[str] = set()

    def changed_names(self) -> set[str]:
        """Names changed since the last call (on the first call: every name the
        feed still holds, which a caller about to walk the store can ignore)."""
        start = ""
        if self._newest_ns is not None:
            start = f"{max(0, self._newest_ns - self._lookback_ns):020d}"
        names = set()
        for entry in self.backend.list_folder(CHANGES, start):
            if entry in self._seen or (parsed := _parse(entry)) is None:
                continue
            at_ns, name = parsed
            self._seen.add(entry)
            names.add(name)
            self._newest_ns = max(self._newest_ns or 0, at_ns)
        if self._newest_ns is not None:  # what the next listing cannot return again
            floor = f"{max(0, self._newest_ns - self._lookback_ns):020d}"
            self._seen = {e for e in self._seen if e > floor}
        return names
