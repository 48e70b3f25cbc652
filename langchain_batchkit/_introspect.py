"""Find the Runnables inside a chain (models behind prompts, parallels, bindings)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from langchain_core.language_models import BaseLanguageModel
from langchain_core.runnables import Runnable, RunnableBinding

__all__ = ["display_name", "iter_runnables", "sdk_retrying_models"]


def iter_runnables(
    root: Runnable[Any, Any], *, max_depth: int = 32
) -> Iterator[Runnable[Any, Any]]:
    """Yield ``root`` and every Runnable reachable through its fields, once each,
    depth first in the chain's order (a sequence's first step before its last).

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
        for child in reversed(list(children)):  # a stack: the first child pops first
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


def display_name(root: Runnable[Any, Any]) -> str:
    """A label a person recognises for a chain: the bar's default ``desc``.

    The name the user gave (``chain.with_config(run_name=...)``, or a Runnable's
    ``name``) first; else the model name of the first language model in the chain
    (``gpt-4o-mini``), which says more than ``RunnableSequence``; else the
    runnable's own name.

    Example:
        >>> from langchain_core.runnables import RunnableLambda
        >>> display_name(RunnableLambda(lambda x: x).with_config(run_name="taglines"))
        'taglines'
    """
    node: Runnable[Any, Any] = root
    while True:
        config = getattr(node, "config", None)
        run_name = config.get("run_name") if isinstance(config, Mapping) else None
        if isinstance(run_name, str) and run_name:
            return run_name
        if not isinstance(node, RunnableBinding):
            break
        node = node.bound
    name = getattr(node, "name", None)
    if isinstance(name, str) and name and not isinstance(node, BaseLanguageModel):
        return name
    for runnable in iter_runnables(root):
        if isinstance(runnable, BaseLanguageModel):
            for attribute in ("model_name", "model", "model_id"):
                value = getattr(runnable, attribute, None)
                if isinstance(value, str) and value:
                    return value
    return root.get_name()
