"""A snapshot of every name's aliases, so that a reader starting cold reads
one object instead of one `aliases.json` per name.

A gateway's first look at a store of 10,000 adapters on S3 otherwise reads
10,000 objects, a round trip each: minutes. A gateway that has read them
writes what it learnt to `.snapshots/aliases.json` (the dot hides it from
adapter listings); the next one to start reads it back.

The snapshot is a cache, never a source of truth:
- each entry holds the MD5 of the `aliases.json` bytes it was read from, and
  a reader trusts it only where the store's listing shows that same digest:
  S3's ETag of an object written in one PUT is the MD5 of its bytes, so a
  match means the bytes are the same, whatever happened in between;
- where stamps are not MD5s (the local backend, SSE-KMS buckets) nothing
  matches and a reader reads every name as before;
- a snapshot that is missing, corrupt or unwritable (read-only credentials)
  costs reads, never a wrong alias.
"""

import hashlib
import json
import logging

from loraplex.adapters.backend import Backend
from loraplex.adapters.errors import StoreUnavailable
from loraplex.adapters.refs import is_alias_map

logger = logging.getLogger(__name__)

KEY = ".snapshots/aliases.json"

Entries = dict[str, tuple[str, dict[str, int]]]  # name → (MD5 of aliases.json, aliases)


def digest(data: bytes | None) -> str:
    """The MD5 S3 lists as the ETag of `data` written in one PUT ("" for no object)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest() if data is not None else ""


def matches(stamp: str | None, md5: str) -> bool:
    """Whether a listing's stamp (an ETag keeps its quotes) is this MD5."""
    return bool(stamp and md5) and stamp.strip('"') == md5


def read(backend: Backend) -> Entries:
    """The last snapshot written, or nothing if there is none or it is unreadable."""
    try:
        data = backend.read(KEY)
        raw = json.loads(data) if data else {}
        return {
            name: (md5, aliases)
            for name, (md5, aliases) in raw.items()
            if isinstance(md5, str) and is_alias_map(aliases)
        }
    except (ValueError, TypeError, AttributeError) as exc:  # a cache: ignore what is not one
        logger.warning("ignoring the unreadable alias snapshot %s/%s: %s", backend.url, KEY, exc)
        return {}


def write(backend: Backend, entries: Entries) -> bool:
    """Replace the snapshot; False (and a log line) if the store refuses the write."""
    body = {name: [md5, aliases] for name, (md5, aliases) in sorted(entries.items())}
    try:
        backend.write(KEY, json.dumps(body, separators=(",", ":")).encode())
    except StoreUnavailable as exc:
        logger.warning(
            "cannot write the alias snapshot to %s (read-only credentials?): %s; "
            "a gateway starting cold reads every aliases.json instead",
            backend.url,
            exc,
        )
        return False
    return True
