"""Cursor pagination as OpenAI's list endpoints answer it (``after``, ``has_more``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from langchain_batchkit.testing._fakeserver._exchange import InvalidRequest

__all__ = ["cursor_page", "query_limit"]


def query_limit(query: Mapping[str, str], *, default: int, maximum: int) -> int:
    """The ``limit`` query parameter, checked to be an int in ``1..maximum``."""
    raw = query.get("limit")
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise InvalidRequest(
            f"'limit' must be an integer between 1 and {maximum}, got {raw!r}.", param="limit"
        )
    return limit


def cursor_page(
    items: Sequence[tuple[str, Mapping[str, object]]], *, after: str | None, limit: int, kind: str
) -> dict[str, object]:
    """One page of ``(id, json)`` items, already in list order, following ``after``."""
    start = 0
    if after is not None:
        ids = [item_id for item_id, _ in items]
        if after not in ids:
            raise InvalidRequest(f"No such {kind} object: {after}", param="after")
        start = ids.index(after) + 1
    selected = items[start : start + limit]
    return {
        "object": "list",
        "data": [dict(item) for _, item in selected],
        "first_id": selected[0][0] if selected else None,
        "last_id": selected[-1][0] if selected else None,
        "has_more": start + limit < len(items),
    }
