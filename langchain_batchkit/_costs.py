"""Pricing each model call an item makes, from what LangChain reports about it.

A call's model is read from the response's metadata (``model_name``, or
``model``): that is the model that answered, dated version included. When the
response names none, the model the chain asked for (its invocation parameters,
captured when the call started) is used. The provider comes from LangChain's
``ls_provider`` metadata, and the tier from the response's ``service_tier``
(``"flex"``), or from the runner (the Batch API).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.outputs import LLMResult

from langchain_batchkit._prices import CallUsage, PriceBook, Tier

__all__ = ["CallStart", "CostMeter", "call_start", "price_message", "price_response"]


@dataclass(frozen=True, slots=True)
class CallStart:
    """What is known of a model call when it starts: the model asked for, its provider."""

    model: str | None
    provider: str | None
    tier: Tier = "standard"


def call_start(kwargs: Mapping[str, Any]) -> CallStart:
    """Read a start callback's ``invocation_params`` and ``metadata``."""
    params = kwargs.get("invocation_params")
    params = params if isinstance(params, Mapping) else {}
    metadata = kwargs.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    model = (
        _text(params.get("model"))
        or _text(params.get("model_name"))
        or _text(metadata.get("ls_model_name"))
    )
    provider = _text(metadata.get("ls_provider"))
    tier: Tier = "flex" if params.get("service_tier") == "flex" else "standard"
    return CallStart(model, provider, tier)


def price_response(
    response: LLMResult, book: PriceBook, start: CallStart | None, tier: Tier | None = None
) -> float | None:
    """The dollars of one model call, or ``None`` when its usage or price is unknown."""
    total = 0.0
    priced = False
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            if message is None:
                continue
            usage = CallUsage.from_metadata(getattr(message, "usage_metadata", None))
            if usage is None:
                continue
            meta = getattr(message, "response_metadata", None) or {}
            cost = book.cost(
                usage,
                _text(meta.get("model_name")) or _text(meta.get("model")) or _model(start),
                provider=start.provider if start is not None else None,
                tier=tier or _tier(meta, start),
            )
            if cost is None:
                return None
            total += cost
            priced = True
    if priced:
        return total
    return _price_llm_output(response, book, start, tier)


def price_message(message: object, book: PriceBook, tier: Tier, model: str | None) -> float | None:
    """The dollars of one answer message on ``tier`` (``model``: the one asked for)."""
    usage = CallUsage.from_metadata(getattr(message, "usage_metadata", None))
    if usage is None:
        return None
    meta = getattr(message, "response_metadata", None) or {}
    answered = _text(meta.get("model_name")) or _text(meta.get("model")) or model
    return book.cost(usage, answered, tier=tier)


class CostMeter:
    """Sums the cost of every model call of one item (thread-safe: calls may run in threads).

    ``cost`` is ``None`` until a call is priced, and stays ``None`` for good once a
    call that reported usage could not be priced: a partial sum would be a wrong
    number.
    """

    __slots__ = ("_book", "_lock", "_starts", "_unknown", "cost", "saved")

    def __init__(self, book: PriceBook) -> None:
        self._book = book
        self._starts: dict[UUID, CallStart] = {}
        self._lock = threading.Lock()
        self._unknown = False
        self.cost: float | None = None
        self.saved = 0.0  # what calls on a cheaper tier saved against the standard one

    def started(self, run_id: UUID, kwargs: Mapping[str, Any]) -> None:
        start = call_start(kwargs)
        with self._lock:
            self._starts[run_id] = start

    def ended(self, run_id: UUID, response: LLMResult) -> float | None:
        """Price one finished call; return its cost."""
        with self._lock:
            start = self._starts.pop(run_id, None)
        saved = 0.0
        try:
            cost = price_response(response, self._book, start)
            if cost is not None and _answered_tier(response, start) != "standard":
                standard = price_response(response, self._book, start, "standard")
                saved = standard - cost if standard is not None and standard > cost else 0.0
        except Exception:
            cost = None
        with self._lock:
            self.saved += saved
            if cost is None:
                if _reported_usage(response):
                    self._unknown = True
                    self.cost = None
            elif not self._unknown:
                self.cost = (self.cost or 0.0) + cost
        return cost

    def failed(self, run_id: UUID) -> None:
        with self._lock:
            self._starts.pop(run_id, None)


def _price_llm_output(
    response: LLMResult, book: PriceBook, start: CallStart | None, tier: Tier | None
) -> float | None:
    output = response.llm_output or {}
    usage = output.get("token_usage")
    if not isinstance(usage, Mapping):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else 0
    call = CallUsage(
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(cached or 0),
    )
    model = _text(output.get("model_name")) or _model(start)
    return book.cost(
        call,
        model,
        provider=start.provider if start is not None else None,
        tier=tier or (start.tier if start is not None else "standard"),
    )


def _reported_usage(response: LLMResult) -> bool:
    if isinstance((response.llm_output or {}).get("token_usage"), Mapping):
        return True
    return any(
        getattr(getattr(g, "message", None), "usage_metadata", None)
        for gens in response.generations
        for g in gens
    )


def _answered_tier(response: LLMResult, start: CallStart | None) -> Tier:
    """The tier the call ran on, as its first answer says (else as it was asked)."""
    for generations in response.generations:
        for generation in generations:
            meta = getattr(getattr(generation, "message", None), "response_metadata", None)
            return _tier(meta or {}, start)
    return start.tier if start is not None else "standard"


def _tier(meta: Mapping[str, Any], start: CallStart | None) -> Tier:
    answered = meta.get("service_tier")
    if answered == "flex":
        return "flex"
    if isinstance(answered, str) and answered:
        return "standard"
    return start.tier if start is not None else "standard"


def _model(start: CallStart | None) -> str | None:
    return start.model if start is not None else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
