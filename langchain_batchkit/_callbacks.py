"""Small callback plumbing: adding a handler to a config, and counting an item's tokens."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.outputs import LLMResult
from langchain_core.runnables import RunnableConfig

from langchain_batchkit._costs import CostMeter
from langchain_batchkit._prices import PriceBook
from langchain_batchkit._results import TokenUsage

__all__ = [
    "ModelEventsOnly",
    "UsageCollector",
    "quiet_callback_errors",
    "usage_of_response",
    "with_handler",
]


def with_handler(
    config: RunnableConfig, handler: BaseCallbackHandler, *, first: bool = False
) -> RunnableConfig:
    """A copy of ``config`` whose callbacks (list or manager) also include ``handler``.

    The handler is inheritable, so every nested run (the model behind a prompt, the
    calls inside a ``RunnableParallel``) reports to it. LangChain awaits inline
    handlers in order, so a handler that may wait (the rate limiter) goes last and
    one that never waits can go ``first``: a cancellation during the wait then
    leaves no handler's event un-awaited.
    """
    prepared = config.copy()
    callbacks = config.get("callbacks")
    if callbacks is None:
        prepared["callbacks"] = [handler]
    elif isinstance(callbacks, BaseCallbackManager):
        manager = callbacks.copy()
        if first:
            manager.handlers.insert(0, handler)
            manager.inheritable_handlers.insert(0, handler)
        else:
            manager.add_handler(handler, inherit=True)
        prepared["callbacks"] = manager
    else:
        prepared["callbacks"] = [handler, *callbacks] if first else [*callbacks, handler]
    return prepared


class _DropMarked(logging.Filter):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def filter(self, record: logging.LogRecord) -> bool:
        return self.marker not in record.getMessage()


def quiet_callback_errors(marker: str) -> None:
    """Drop LangChain's "Error in <handler> callback" warnings that mention ``marker``:
    for an exception a handler of ours raises on purpose (a stop signal, a refusal)."""
    logging.getLogger("langchain_core.callbacks.manager").addFilter(_DropMarked(marker))


def usage_of_response(response: LLMResult) -> TokenUsage | None:
    """Token usage of one model call, from ``llm_output`` or the messages' metadata."""
    token_usage = (response.llm_output or {}).get("token_usage")
    if isinstance(token_usage, Mapping) and token_usage.get("total_tokens") is not None:
        inp = int(token_usage.get("prompt_tokens") or 0)
        out = int(token_usage.get("completion_tokens") or 0)
        return TokenUsage(inp, out, int(token_usage["total_tokens"]))
    total: TokenUsage | None = None
    for generations in response.generations:
        for generation in generations:
            usage = TokenUsage.from_output(getattr(generation, "message", None))
            if usage is not None:
                total = usage if total is None else total + usage
    return total


class ModelEventsOnly(BaseCallbackHandler):
    """A handler that LangChain calls for model events only.

    Chain, retriever, agent, retry and custom events skip it, so adding it to
    every item costs nothing on the steps that are not model calls.
    """

    @property
    def ignore_chain(self) -> bool:
        return True

    @property
    def ignore_retriever(self) -> bool:
        return True

    @property
    def ignore_agent(self) -> bool:
        return True

    @property
    def ignore_retry(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[Any]], **kwargs: Any
    ) -> Any:
        """Nothing at the start; defined so LangChain does not fall back to
        ``on_llm_start`` and turn every message into a string first."""
        return None


#: Guards the lazy creation of an item's cost meter (model calls may start in threads).
_METER_LOCK = threading.Lock()


class UsageCollector(ModelEventsOnly):
    """Sums the token usage (and, with a meter, the cost) of every model call made
    for one item, at any depth.

    A ``prompt | model | parser`` chain returns a string, so the output carries no
    ``usage_metadata``; the model's own run still reports it here.
    """

    run_inline = True
    __slots__ = ("_book", "_lock", "meter", "usage")

    def __init__(self, prices: PriceBook | None = None) -> None:
        self.usage: TokenUsage | None = None
        self.meter: CostMeter | None = None  # made at the first model call (most steps make none)
        self._book = prices
        self._lock = _METER_LOCK

    def _meter(self) -> CostMeter | None:
        if self.meter is None and self._book is not None:
            with self._lock:
                if self.meter is None:
                    self.meter = CostMeter(self._book)
        return self.meter

    @property
    def cost(self) -> float | None:
        """Dollars of the calls so far (``None``: not priced)."""
        return self.meter.cost if self.meter is not None else None

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[Any]], **kwargs: Any
    ) -> Any:
        """Note the model and tier asked for (the price falls back to them)."""
        meter = self._meter()
        if meter is not None and "run_id" in kwargs:
            meter.started(kwargs["run_id"], kwargs)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> Any:
        """Note a completion model's name."""
        meter = self._meter()
        if meter is not None and "run_id" in kwargs:
            meter.started(kwargs["run_id"], kwargs)

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Add one model call's usage and cost."""
        usage = usage_of_response(response)
        if usage is not None:
            self.usage = usage if self.usage is None else self.usage + usage
        meter = self._meter()
        if meter is not None:
            meter.ended(run_id, response)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget a call that failed (nothing to price)."""
        if self.meter is not None:
            self.meter.failed(run_id)
