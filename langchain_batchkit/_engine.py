"""The one per-item engine behind every entry point, sync and async.

An item's path (call the chain, capture the error, time it, read token usage)
is written once, in :meth:`Engine.run_item`. :meth:`Engine.stream` drives items
through a sliding window: it reads the next input only when a slot is free, so
it never materialises the input or creates a coroutine per input up front, and a
slow item never holds back the start of the next one. New items start only
while the consumer is pulling results; when the consumer leaves (``break``, an
exception, cancellation) every pending item is cancelled and no further call is
made.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import replace
from typing import Any, Generic, TypeVar

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.callbacks.manager import ahandle_event
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tracers import BaseTracer
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from langchain_batchkit._callbacks import UsageCollector, with_handler
from langchain_batchkit._checkpoint import Checkpoint, CheckpointError
from langchain_batchkit._concurrency import AdaptiveConcurrency
from langchain_batchkit._errors import BatchkitError, ConfigurationError
from langchain_batchkit._progress import ProgressReporter
from langchain_batchkit._results import ItemError, ItemResult, TokenUsage
from langchain_batchkit._retry import RetryPolicy, is_rate_limit
from langchain_batchkit._serialize import dumps_value

__all__ = ["Engine", "IndexedSource", "InputSourceError", "Resume"]

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

IndexedSource = Iterable[tuple[int, InputT]] | AsyncIterable[tuple[int, InputT]]
"""Inputs paired with their index, read lazily."""


class InputSourceError(BatchkitError):
    """Reading the next input from the user's iterable raised.

    Items that finished before it are kept (``kit.last_run``); the cause is chained.
    """


class _Exhausted:
    __slots__ = ()


_EXHAUSTED = _Exhausted()


class _Source(Generic[InputT]):
    """One reader over a sync or async iterable of ``(index, input)`` pairs."""

    __slots__ = ("_aiter", "_iter", "_last_index")

    def __init__(self, source: IndexedSource[InputT]) -> None:
        self._iter: Iterator[tuple[int, InputT]] | None = None
        self._aiter: AsyncIterator[tuple[int, InputT]] | None = None
        if isinstance(source, AsyncIterable):
            self._aiter = aiter(source)
        else:
            self._iter = iter(source)
        self._last_index = -1

    async def next(self) -> tuple[int, InputT] | _Exhausted:
        try:
            if self._iter is not None:
                pair = next(self._iter)
            else:
                assert self._aiter is not None
                pair = await anext(self._aiter)
        except (StopIteration, StopAsyncIteration):
            return _EXHAUSTED
        except Exception as exc:
            raise InputSourceError(
                f"reading input #{self._last_index + 1} failed: {type(exc).__name__}: {exc}"
            ) from exc
        self._last_index = pair[0]
        return pair


class Engine(Generic[InputT, OutputT]):
    """Runs a Runnable over items, one result per item, never raising for an item.

    Args:
        runnable: the chain to call once per item.
        retry: how to retry transient failures (``None``: never).
        clock: a monotonic clock in seconds (latencies), injectable for tests.
    """

    __slots__ = ("_clock", "_retry", "runnable")

    def __init__(
        self,
        runnable: Runnable[InputT, OutputT],
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.runnable = runnable
        self._retry = retry
        self._clock = clock

    async def run_item(
        self,
        index: int,
        value: InputT,
        config: RunnableConfig,
        kwargs: dict[str, Any],
        reporter: ProgressReporter | None = None,
    ) -> ItemResult[InputT, OutputT]:
        """Call the chain for one item and capture its output or its error.

        The first attempt is a plain call (no retry machinery on the hot path);
        only a transient failure hands the item to :meth:`_retry_item`.
        ``Exception`` is captured as the item's error; ``BaseException``
        (cancellation, KeyboardInterrupt) passes through and is never an output.
        """
        start = self._clock()
        collector = UsageCollector()
        config = with_handler(config, collector, first=True)
        try:
            output = await self.runnable.ainvoke(value, config, **kwargs)
        except Exception as exc:
            policy = self._retry
            if policy is None or policy.max_attempts == 1 or not policy.should_retry(exc):
                error = ItemError.from_exception(exc)
                usage = collector.usage
                return ItemResult(index, value, None, error, 1, self._clock() - start, usage)
            return await self._retry_item(
                index, value, config, kwargs, reporter, start, exc, collector
            )
        usage = collector.usage or TokenUsage.from_output(output)
        return ItemResult(index, value, output, None, 1, self._clock() - start, usage)

    async def _retry_item(
        self,
        index: int,
        value: InputT,
        config: RunnableConfig,
        kwargs: dict[str, Any],
        reporter: ProgressReporter | None,
        start: float,
        first_error: Exception,
        collector: UsageCollector,
    ) -> ItemResult[InputT, OutputT]:
        """Attempts 2..n of one item, driven by tenacity.

        Tenacity's first attempt replays the failure already seen, so its attempt
        numbers are the item's and its wait/stop decisions cover every retry.
        """
        policy = self._retry
        assert policy is not None
        history: list[ItemError] = []
        replay: list[Exception] = [first_error]
        origin = policy.clock() - (self._clock() - start)  # the item's start, on the policy's clock

        async def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            error = ItemError.from_exception(exc) if exc else ItemError("Unknown", "")
            history.append(error)
            if reporter is not None:
                reporter.retry_scheduled(index, error)
            await _fire_on_retry(config, state)

        def before(state: RetryCallState) -> None:
            if state.attempt_number > 1 and reporter is not None:
                reporter.retry_started()

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts) | _StopOnBudget(policy, origin),
            wait=_wait_for(policy),
            retry=retry_if_exception(
                lambda e: isinstance(e, Exception) and policy.should_retry(e)
            ),  # cancellation and Ctrl-C are never retried, whatever retry_on says
            sleep=policy.sleep,
            before=before,
            before_sleep=before_sleep,
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    if replay:
                        raise replay.pop()
                    output = await self.runnable.ainvoke(value, config, **kwargs)
        except Exception as exc:
            error = ItemError.from_exception(exc)
            latency = self._clock() - start
            usage = collector.usage
            return ItemResult(index, value, None, error, attempts, latency, usage, tuple(history))
        usage = collector.usage or TokenUsage.from_output(output)
        latency = self._clock() - start
        return ItemResult(index, value, output, None, attempts, latency, usage, tuple(history))

    async def stream(
        self,
        source: IndexedSource[InputT],
        *,
        concurrency: int,
        config_for: Callable[[int], RunnableConfig],
        reporter: ProgressReporter | None = None,
        kwargs: dict[str, Any] | None = None,
        adaptive: AdaptiveConcurrency | None = None,
        resume: Resume | None = None,
        ordered: bool = False,
        reorder_buffer: int = 1000,
        on_unyielded: Callable[[ItemResult[InputT, OutputT]], None] | None = None,
    ) -> AsyncGenerator[ItemResult[InputT, OutputT], None]:
        """Yield one :class:`ItemResult` per input, in completion (or input) order.

        At most ``concurrency`` items are in flight. Leaving the iteration early
        (or cancelling the task iterating it) cancels the items in flight.

        Args:
            source: ``(index, input)`` pairs, sync or async, read one at a time.
            concurrency: the most items in flight at once.
            config_for: the RunnableConfig for the item with a given index.
            reporter: counts each finished item (the progress bar and hook).
            kwargs: extra keyword arguments for the chain's ``ainvoke``.
            adaptive: when given, decides the window size instead of ``concurrency``
                and learns from each finished item.
            resume: a checkpoint to skip finished items from and record new ones to.
            ordered: yield in input order, holding at most ``reorder_buffer`` finished
                items back (new items wait while the buffer is full).
            reorder_buffer: see ``ordered``.
            on_unyielded: receives the items that finished but were not yielded because
                the iteration ended first (cancellation, an interrupt): they are paid
                for, so they are recorded in the checkpoint and handed here.
        """
        call_kwargs = kwargs or {}
        reader: _Source[InputT] = _Source(source)
        loop = asyncio.get_running_loop()
        pending: dict[asyncio.Task[ItemResult[InputT, OutputT]], _Staged[InputT]] = {}
        todo: deque[_Staged[InputT]] = deque()
        # (read order, checkpoint key if the result is new and must be recorded, result)
        done: deque[tuple[int, str | None, ItemResult[InputT, OutputT]]] = deque()
        held: dict[int, ItemResult[InputT, OutputT]] = {}  # ordered mode: seq -> result
        crashed: list[BaseException] = []
        wake = asyncio.Event()
        closing = False
        read_ahead = resume.chunk_size if resume is not None else 1
        next_seq = 0  # ordered mode: the next sequence number to yield
        seq = 0
        exhausted = False
        source_error: InputSourceError | None = None

        def on_done(task: asyncio.Task[ItemResult[InputT, OutputT]]) -> None:
            staged = pending.pop(task)
            if task.cancelled():
                if not closing:
                    # The item cancelled itself (we did not): an error for that item,
                    # never an output, and never a silent loss.
                    err = ItemError("CancelledError", "the item's task was cancelled")
                    result: ItemResult[InputT, OutputT] = ItemResult(
                        staged.index, staged.value, None, err
                    )
                    done.append((staged.seq, staged.key, result))
            elif (exc := task.exception()) is not None:
                crashed.append(exc)
            else:
                done.append((staged.seq, staged.key, task.result()))
            wake.set()

        async def read_more() -> None:
            nonlocal exhausted, source_error, seq
            batch: list[_Staged[InputT]] = []
            while len(batch) < read_ahead:
                try:
                    pair = await reader.next()
                except InputSourceError as exc:
                    # Finish what is in flight first: those items are not lost.
                    source_error, exhausted = exc, True
                    break
                if isinstance(pair, _Exhausted):
                    exhausted = True
                    break
                key = resume.key_of(pair[0], pair[1]) if resume is not None else None
                batch.append(_Staged(seq, pair[0], pair[1], key))
                seq += 1
            if resume is None:
                todo.extend(batch)
                return
            stored = resume.finished([s.key for s in batch if s.key is not None])
            for s in batch:
                old = stored.get(s.key) if s.key is not None else None
                if old is None:
                    todo.append(s)
                else:  # finished in an earlier run: not called again
                    resume.check_same_input(s.index, old.input, s.value)
                    done.append((s.seq, None, replace(old, index=s.index)))

        try:
            while True:
                limit = max(1, adaptive.current() if adaptive is not None else concurrency)
                while len(pending) < limit:
                    if not todo:
                        if exhausted or done:
                            break
                        await read_more()
                        continue
                    if ordered and todo[0].seq - next_seq >= reorder_buffer:
                        break
                    staged = todo.popleft()
                    task = loop.create_task(
                        self.run_item(
                            staged.index, staged.value, config_for(staged.index), call_kwargs,
                            reporter,
                        )
                    )  # fmt: skip
                    pending[task] = staged
                    task.add_done_callback(on_done)
                if crashed:
                    raise crashed[0]
                if done:
                    item_seq, key, result = done.popleft()
                    if key is not None and resume is not None:
                        result = replace(result, key=key)
                        resume.checkpoint.record(key, result)
                    if adaptive is not None:
                        adaptive.observe(_pushed_back(result))
                    if reporter is not None:
                        reporter.item_done(result)
                    if not ordered:
                        yield result
                        continue
                    held[item_seq] = result
                    while next_seq in held:
                        ready = held.pop(next_seq)
                        next_seq += 1
                        yield ready
                    continue
                if not pending and not todo and exhausted:
                    if source_error is not None:
                        raise source_error
                    return
                if not pending:
                    continue
                wake.clear()
                await wake.wait()
        finally:
            closing = True
            if pending:
                tasks = list(pending)
                for task in tasks:
                    task.cancel()
                logger.debug("cancelling %d items in flight", len(tasks))
                await asyncio.wait(tasks)
            leftovers = [*held.values(), *(r for _, _, r in done)]
            if resume is not None:
                for _, key, result in done:
                    if key is not None:
                        resume.checkpoint.record(key, replace(result, key=key))
                resume.checkpoint.flush()
            if on_unyielded is not None:
                for result in leftovers:
                    on_unyielded(result)


class _Staged(Generic[InputT]):
    """An input read from the source: its read order, index, value and checkpoint key."""

    __slots__ = ("index", "key", "seq", "value")

    def __init__(self, seq: int, index: int, value: InputT, key: str | None) -> None:
        self.seq = seq
        self.index = index
        self.value = value
        self.key = key


class Resume:
    """What the engine needs from a checkpoint: keys, earlier results, and a sink."""

    __slots__ = ("checkpoint", "chunk_size", "include_failed", "key_fn")

    def __init__(
        self,
        checkpoint: Checkpoint,
        key_fn: Callable[[Any], str] | None,
        *,
        include_failed: bool,
    ) -> None:
        self.checkpoint = checkpoint
        self.key_fn = key_fn
        self.include_failed = include_failed
        self.chunk_size = checkpoint.chunk_size

    def key_of(self, index: int, value: Any) -> str:
        if self.key_fn is None:
            return str(index)
        key = self.key_fn(value)
        if not isinstance(key, str):
            raise ConfigurationError(
                f"key= must return a str; for input #{index} it returned {type(key).__name__}"
            )
        return key

    def check_same_input(self, index: int, stored: Any, given: Any) -> None:
        """With index keys, a stored row must be for the same input: never hand one
        input another's output (a checkpoint reused for a different input list)."""
        if self.key_fn is None and dumps_value(stored) != dumps_value(given):
            raise CheckpointError(
                f"checkpoint {self.checkpoint.path} holds a different input at index {index} "
                f"({_short(stored)} there, {_short(given)} here): it was written for another "
                "input list. Use a new file, or key= to name items by content or id"
            )

    def finished(self, keys: list[str]) -> dict[str, ItemResult[Any, Any]]:
        # Failed items count as finished unless the caller asked to run them again.
        return self.checkpoint.finished(keys, include_failed=not self.include_failed)


def _pushed_back(result: ItemResult[Any, Any]) -> bool:
    errors = (*result.history, result.error) if result.error else result.history
    return any(
        is_rate_limit(e.exception) if e.exception is not None else e.type.endswith("RateLimitError")
        for e in errors
    )


class _StopOnBudget(stop_base):
    """Stop when the next wait would end past the item's ``max_total_time``."""

    def __init__(self, policy: RetryPolicy, start: float) -> None:
        self._policy = policy
        self._start = start

    def __call__(self, retry_state: RetryCallState) -> bool:
        budget = self._policy.max_total_time
        if budget is None:
            return False
        elapsed = self._policy.clock() - self._start
        return elapsed + retry_state.upcoming_sleep > budget


class _wait_for(wait_base):
    """The policy's delay for the attempt that just failed (Retry-After aware)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return self._policy.delay(retry_state.attempt_number, exc)


async def _fire_on_retry(config: RunnableConfig, state: RetryCallState) -> None:
    """Fire LangChain's ``on_retry`` for the item's callback handlers.

    Plain ``with_retry`` never does (langchain-ai/langchain #36382). Inside a parent
    chain the event is reported on the parent's run (the run the retry happens
    in); at the root it gets a fresh run id, and tracers, which can only attach it
    to a live run, are skipped.
    """
    callbacks = config.get("callbacks")
    if not callbacks:
        return
    if isinstance(callbacks, BaseCallbackManager):
        handlers, parent = callbacks.handlers, callbacks.parent_run_id
    else:
        handlers, parent = list(callbacks), None
    if parent is None:
        handlers = [h for h in handlers if not isinstance(h, BaseTracer)]
    if handlers:
        await ahandle_event(
            handlers, "on_retry", "ignore_retry", state, run_id=parent or uuid.uuid4()
        )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
