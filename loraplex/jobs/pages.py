"""OpenAI's list pages: `data`, `has_more`, `first_id`, `last_id`, cursor `after`.

Ids sort by creation (names.py), so `after` works by comparison: a page
continues after a cursor even if the object it names was deleted meanwhile.
"""

from collections.abc import Sequence
from typing import Any

from loraplex.jobs.errors import InvalidRequest

MAX_LIMIT = 10_000


def page(
    items: Sequence[Any], *, after: str | None, limit: int | None, newest_first: bool = True,
    default_limit: int = 20,
) -> dict[str, Any]:  # fmt: skip
    """`items` (records with `.id` and `.public()`), ordered and cut as OpenAI pages."""
    limit = default_limit if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
    ordered = sorted(items, key=lambda r: r.id, reverse=newest_first)
    if after is not None:
        ordered = [r for r in ordered if (r.id < after if newest_first else r.id > after)]
    data = [r.public() for r in ordered[:limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": len(ordered) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
