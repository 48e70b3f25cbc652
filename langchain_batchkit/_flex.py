"""OpenAI's flex tier: Batch-API prices on ordinary calls, for any chain.

``flex=True`` runs every OpenAI chat model in the chain with
``service_tier="flex"``: the kit makes one copy of the chain whose models carry
it (the models are found by walking the chain's steps: sequences, parallels,
bindings, fallbacks, and any other runnable that keeps its steps as fields; a
model hidden inside a plain function cannot be found, and the kit says so). The
copies share the original models' HTTP clients.

Flex may answer 429 "Resource unavailable" when it is short of capacity. That is
not the provider pacing *us*: it does not pause or slow the rate limiter, and it
does not count toward the retry policy's rate-limit allowance. The item is
retried with backoff, on flex, until ``flex_deadline`` seconds have passed since
its first attempt; later attempts run on the standard tier, so no item waits on
flex for ever. Each call is priced at the tier that answered it (the response
names it), and the summary shows what flex saved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.runnables import Runnable

from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._retry import is_rate_limit, status_code_of

__all__ = ["DEFAULT_FLEX_DEADLINE", "is_flex_unavailable", "with_service_tier"]

#: Seconds an item keeps retrying on flex before it falls back to the standard tier.
DEFAULT_FLEX_DEADLINE = 600.0


def is_flex_unavailable(error: BaseException) -> bool:
    """True for flex's 429 "Resource unavailable" (capacity), not a rate limit of ours."""
    if not is_rate_limit(error) and status_code_of(error) != 429:
        return False
    code = getattr(error, "code", None)
    body = getattr(error, "body", None)
    if isinstance(body, Mapping):
        code = code or body.get("code")
    if code == "resource_unavailable":
        return True
    return "resource unavailable" in str(error).lower()


def with_service_tier(runnable: Runnable[Any, Any], tier: str) -> Runnable[Any, Any]:
    """A copy of ``runnable`` whose OpenAI chat models run on ``tier``.

    Raises:
        ConfigurationError: no OpenAI chat model was found in the chain.
    """
    found: list[int] = []
    copied: Runnable[Any, Any] = _rewrite(runnable, lambda m: _retiered(m, tier, found), set())
    if not found:
        raise ConfigurationError(
            "flex=True found no OpenAI chat model in the chain (one called inside a "
            "function cannot be seen): set ChatOpenAI(service_tier='flex') yourself"
        )
    return copied


def _retiered(model: Any, tier: str, found: list[int]) -> Any:
    from langchain_openai.chat_models.base import BaseChatOpenAI

    if not isinstance(model, BaseChatOpenAI):
        return None
    found.append(1)
    return model.model_copy(update={"service_tier": tier})


def _rewrite(value: Any, swap: Callable[[Any], Any], seen: set[int]) -> Any:
    """``value`` with every model ``swap`` replaces swapped, copying only what changes."""
    if isinstance(value, Runnable):
        swapped = swap(value)
        if swapped is not None:
            return swapped
        if id(value) in seen:
            return value
        seen.add(id(value))
        fields = getattr(type(value), "model_fields", None)
        if not fields:
            return value
        changes = {}
        for name in fields:
            current = getattr(value, name, None)
            new = _rewrite(current, swap, seen)
            if new is not current:
                changes[name] = new
        return value.model_copy(update=changes) if changes else value  # type: ignore[attr-defined]
    if isinstance(value, list | tuple):
        items = [_rewrite(item, swap, seen) for item in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return type(value)(items)
        return value
    if isinstance(value, Mapping):
        mapped = {k: _rewrite(v, swap, seen) for k, v in value.items()}
        if any(mapped[k] is not value[k] for k in value):
            return dict(mapped)
        return value
    return value
