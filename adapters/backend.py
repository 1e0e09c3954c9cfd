"""The storage primitives a store needs, and nothing more.

Both backends (local directory, S3-compatible) offer the same few
operations on keys like `name/v3/manifest.json`; everything else — version
numbering, aliases, verification — is written once in `store.py` on top.
The two primitives that make concurrency safe:

- `create(key, data)`: write only if the key does not exist, all or nothing
  (exclusive link locally, `If-None-Match: *` on S3);
- `replace_if(key, data, token)`: compare-and-swap against the token
  `read_versioned` returned (a content hash under a lock file locally, the
  ETag with `If-Match` on S3).
"""

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor


class Backend(ABC):
    url: str
    parallel_reads: int = 1
    """How many small reads to run at once. On S3 each is a network round trip,
    so many go faster in parallel, as many as the client pools connections;
    locally they are system calls, which threads only slow down."""

    @contextlib.contextmanager
    def reads_at_once(self, count: int) -> Iterator[Callable]:
        """A `map` for up to `count` small reads at a time: a pool's map where
        `parallel_reads` allows more than one and there is more than one to do,
        else the builtin."""
        workers = min(self.parallel_reads, count)
        if workers <= 1:
            yield map
            return
        with ThreadPoolExecutor(workers) as pool:
            yield pool.map

    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None if it does not exist."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        """(bytes, token) for a later `replace_if`; (None, None) if absent."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Write or overwrite, atomically: readers see the old or the new bytes."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write only if absent; False if the key already exists."""

    @abstractmethod
    def replace_if(self, key: str, data: bytes, token: str | None) -> bool:
        """Write if the object is still what `token` saw (None: still absent)."""

    @abstractmethod
    def children(self, prefix: str) -> list[str]:
        """Names one level below `prefix` (folders and objects)."""

    @abstractmethod
    def walk(self, prefix: str) -> list[str]:
        """Every object under `prefix`, as keys relative to it (`v3/manifest.json`).

        One listing instead of one read per version: on S3 a single LIST call
        per thousand keys. Names starting with a dot are hidden at every level.
        """

    @abstractmethod
    def walk_stamped(self, prefix: str) -> dict[str, str]:
        """`walk`, each key with a stamp that changes whenever its object does
        (the ETag on S3; inode, mtime and size locally): one listing tells
        which objects changed since the last, without reading any."""

    @abstractmethod
    def list_folder(self, prefix: str, start_after: str = "") -> list[str]:
        """Names of the objects directly in folder `prefix`, hidden or not, sorted,
        only those after `start_after`: a short listing of a journal's newest
        entries (`StartAfter` on S3), however long the store's other folders are."""

    @abstractmethod
    def folders(self, after: str = "") -> list[str]:
        """The store's top-level folders (dot names hidden) whose names sort
        after `after`, sorted: a listing of names only, never a walk of every
        key (on S3 one delimited LIST call per thousand names, starting at
        `after`). Servers order common prefixes differently (AWS by `name/`
        byte order, SeaweedFS by name), so the order is made here."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; nothing happens if it does not exist."""

    @abstractmethod
    def delete_tree(self, prefix: str) -> None:
        """Remove every object under `prefix`."""
