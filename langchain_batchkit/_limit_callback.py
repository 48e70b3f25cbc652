"""The callback handler that routes every nested model call to a :class:`RateLimit`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import LLMResult

from langchain_batchkit._callbacks import ModelEventsOnly, usage_of_response

if TYPE_CHECKING:
    from langchain_batchkit._limits import RateLimit

__all__ = ["LimiterCallback"]


class LimiterCallback(AsyncCallbackHandler, ModelEventsOnly):
    """Routes model-call callbacks of every nested run to one :class:`RateLimit`.

    One handler object serves LangChain's async and sync callback managers (a sync
    step nested in an async chain hands it from one to the other), and they call
    it differently: the async manager awaits a coroutine function, the sync one
    calls the method and runs a coroutine it gets back on a throw-away event loop,
    ignoring its errors. So each event resolves when it is looked up: a coroutine
    function when an event loop runs in this thread (the model call is on that
    loop), a blocking function otherwise (a worker thread, which waits for its
    turn right there).

    ``raise_error``: if the limiter itself fails, the model call fails (that item's
    error) instead of LangChain logging it and sending the request unpaced. The one
    exception is a sync model call made on a loop's own thread (``llm.invoke`` in a
    Jupyter cell): langchain-core runs the coroutine on a throw-away loop, where it
    still waits its turn and holds its slot until the call ends, but core only logs
    its errors.
    """

    run_inline = True
    raise_error = True

    def __init__(self, limit: RateLimit) -> None:
        self._limit = limit

    @property
    def on_chat_model_start(self) -> Callable[..., Any]:
        """Wait for a chat request's turn (see the class docs for sync and async)."""
        return self._starter(_chat_messages)

    @property
    def on_llm_start(self) -> Callable[..., Any]:
        """Wait for a completion request's turn."""
        return self._starter(_prompt_messages)

    @property
    def on_llm_end(self) -> Callable[..., Any]:
        """Free the request's slot and learn from its usage and headers."""
        return _awaitable_on_a_loop(self._ended)

    @property
    def on_llm_error(self) -> Callable[..., Any]:
        """Free the request's slot and learn from its error (a 429 backs off)."""
        return _awaitable_on_a_loop(self._failed)

    def _starter(self, as_messages: Callable[[Any], list[BaseMessage]]) -> Callable[..., Any]:
        limit = self._limit
        loop = _running_loop()

        def tokens(inputs: Any, kwargs: Mapping[str, Any]) -> int:
            return limit.estimate(as_messages(inputs), kwargs.get("invocation_params") or {})

        if loop is None:

            def start(serialized: Any, inputs: Any, *, run_id: UUID, **kw: Any) -> None:
                limit.enter_sync(run_id, tokens(inputs, kw))

            return start

        async def astart(serialized: Any, inputs: Any, *, run_id: UUID, **kw: Any) -> None:
            # On another loop, a sync manager called on this loop's thread runs us on a
            # throw-away loop whose task ends at once: only exit() may free the slot.
            on_own_loop = asyncio.get_running_loop() is loop
            await limit.enter(run_id, tokens(inputs, kw), bind_to_task=on_own_loop)

        return astart

    def _ended(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        used, headers = _usage_and_headers(response)
        self._limit.exit(run_id, used_tokens=used, headers=headers)

    def _failed(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._limit.exit(run_id, error=error)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _awaitable_on_a_loop(event: Callable[..., None]) -> Callable[..., Any]:
    """``event`` in a worker thread; on a loop, a coroutine function doing the same.

    Whoever calls an ``AsyncCallbackHandler``'s event on a loop may await it.
    """
    if _running_loop() is None:
        return event

    async def aevent(*args: Any, **kwargs: Any) -> None:
        event(*args, **kwargs)

    return aevent


def _chat_messages(messages: list[list[BaseMessage]]) -> list[BaseMessage]:
    return [m for group in messages for m in group]


def _prompt_messages(prompts: list[str]) -> list[BaseMessage]:
    return [HumanMessage(p) for p in prompts]


def _usage_and_headers(response: LLMResult) -> tuple[int | None, Mapping[str, str] | None]:
    usage = usage_of_response(response)
    headers: Mapping[str, str] | None = None
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            found = message.response_metadata.get("headers") if message is not None else None
            if isinstance(found, Mapping):
                headers = {str(k).lower(): str(v) for k, v in found.items()}
    return (usage.total_tokens if usage is not None else None), headers
