"""Find the Runnables inside a chain (models behind prompts, parallels, bindings)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from langchain_core.runnables import Runnable

__all__ = ["iter_runnables", "sdk_retrying_models"]


def iter_runnables(
    root: Runnable[Any, Any], *, max_depth: int = 32
) -> Iterator[Runnable[Any, Any]]:
    """Yield ``root`` and every Runnable reachable through its fields, once each.

    Follows sequences, parallels, bindings, fallbacks and branches through their
    attributes and containers; a RunnableLambda's closure is opaque.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen or depth > max_depth:
            continue
        seen.add(id(obj))
        if isinstance(obj, Runnable):
            yield obj
            children: Any = vars(obj).values() if hasattr(obj, "__dict__") else ()
        elif isinstance(obj, Mapping):
            children = obj.values()
        elif isinstance(obj, list | tuple):
            children = obj
        else:
            continue
        for child in children:
            if isinstance(child, Runnable | Mapping | list | tuple):
                stack.append((child, depth + 1))


def sdk_retrying_models(root: Runnable[Any, Any]) -> list[tuple[str, int]]:
    """``(name, max_retries)`` of models in the chain whose SDK retries on its own."""
    found = []
    for r in iter_runnables(root):
        client = getattr(r, "root_async_client", None) or getattr(r, "root_client", None)
        retries = getattr(client, "max_retries", None)
        if type(retries) is int and retries > 0:
            found.append((r.get_name(), retries))
    return found
