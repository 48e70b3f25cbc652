"""Errors that are the run's, not an item's: they stop the whole run with one clear error.

An async-only chain on a sync entry point, a keyword argument the chain rejects,
an HTTP client bound to another (or a closed) event loop: every item would fail
alike, so instead of N failed rows the run raises one error saying what to change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from langchain_batchkit._errors import (
    ConfigurationError,
    EventLoopMismatchError,
    describe_exception,
    exception_message,
)
from langchain_batchkit._retry import status_code_of

__all__ = ["run_stopper"]

_ASYNC_ONLY = "Cannot invoke a coroutine function synchronously"
_LOOP_MISMATCH = re.compile(
    r"Event loop is closed|bound to a different event loop|attached to a different loop"
    r"|different event loop|got Future .* attached to a different loop"
)


def run_stopper(
    exc: BaseException, kwargs: Mapping[str, Any], *, sync: bool, chain: str
) -> Exception | None:
    """The error that stops the whole run, if ``exc`` is not the item's own fault.

    * an async-only chain called through a sync entry point (core's own message);
    * a keyword argument of the batch call that the chain (a ``TypeError``) or
      the provider (HTTP 400 naming it) rejects;
    * a ``RuntimeError`` from an HTTP client whose connections belong to another,
      or a closed, event loop (langchain-openai caches one async client per model).
    """
    message = exception_message(exc)
    if sync and isinstance(exc, TypeError) and _ASYNC_ONLY in message:
        return ConfigurationError(
            f"{chain} has only an async implementation, so the sync entry points "
            "(batch, invoke, stream_results, run) cannot call it: use `await kit.abatch(...)` "
            "(or ainvoke / astream_results / arun)"
        )
    if kwargs:
        rejected = [name for name in kwargs if _names(message, name)]
        keyword_error = isinstance(exc, TypeError) and "keyword argument" in message
        if rejected and (keyword_error or status_code_of(exc) == 400):
            return ConfigurationError(
                f"the chain rejected keyword argument(s) {', '.join(map(repr, rejected))} "
                f"passed to the batch call ({type(exc).__name__}: {message[:300]}). Keywords "
                "that are not batchkit options go to the chain's invoke; bind them on the "
                "chain instead (chain.bind(...)) or drop them"
            )
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, RuntimeError) and _LOOP_MISMATCH.search(exception_message(cause)):
            return EventLoopMismatchError(
                f"{chain}'s HTTP client belongs to another (or a closed) event loop: "
                f"{describe_exception(cause)[:200]}. langchain-openai caches one "
                "async client per model configuration, bound to the loop that first used it, "
                "so two asyncio.run(...) calls (or two loops) cannot share one model. Run every "
                "async call inside one event loop, or use the sync kit.batch(...)"
            )
        cause = cause.__cause__ or cause.__context__
    return None


def _names(message: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message) is not None
