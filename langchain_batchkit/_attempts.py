"""One item's attempts: its state, and the pure decision after each attempt.

Both drivers run an attempt the same way (call the chain, capture its output or
error) and hand the outcome to :meth:`RunPlan.settle`, which decides without
I/O: the item's final :class:`ItemResult`, or the seconds to wait before the
next attempt (tenacity's strategies, see :meth:`RetryPolicy.decide`; a re-ask,
see :mod:`._reask`, starts at once with the model's answer and its parse error
added to the messages). A few
errors say the whole run is wrong rather than the item (a keyword the chain
rejects, an async-only chain on the sync path, an HTTP client bound to another
event loop): they stop the run at once with one clear error instead of turning
into N failed rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Generic, TypeVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable, RunnableConfig
from tenacity import RetryCallState

from langchain_batchkit._budget import Budget
from langchain_batchkit._callbacks import UsageCollector, with_handler
from langchain_batchkit._clock import Clock
from langchain_batchkit._errors import (
    BudgetExceededError,
    RedactedError,
    exception_message,
    exception_traceback,
)
from langchain_batchkit._item import Attempt, ItemError, ItemResult, TokenUsage
from langchain_batchkit._prices import PriceBook
from langchain_batchkit._reask import (
    Reask,
    ReaskState,
    follow_up,
    is_parse_error,
    reask_chain,
    with_state,
)
from langchain_batchkit._retry import RetryPolicy
from langchain_batchkit._run_stopper import run_stopper

__all__ = ["ItemRun", "RunPlan", "observed"]

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


class ItemRun(Generic[InputT, OutputT]):
    """The mutable state of one item while it runs; owned by one attempt at a time."""

    __slots__ = (
        "attempt_started",
        "attempts",
        "config",
        "cost_before",
        "history",
        "index",
        "key",
        "last_error",
        "not_before",
        "reask",
        "retry_state",
        "run_manager",
        "seq",
        "started",
        "usage",
        "usage_before",
        "value",
    )

    def __init__(
        self, seq: int, index: int, value: InputT, key: str | None, config: RunnableConfig
    ) -> None:
        self.seq = seq
        self.index = index
        self.value = value
        self.key = key
        self.config = config
        self.attempts = 0
        self.started = 0.0
        self.attempt_started = 0.0
        self.not_before = 0.0
        self.history: list[Attempt] = []
        self.last_error: ItemError | None = None
        self.retry_state: RetryCallState | None = None
        self.reask: ReaskState | None = None
        self.run_manager: Any = None
        self.usage: UsageCollector | None = None
        self.usage_before: TokenUsage | None = None
        self.cost_before: float | None = None

    def begin_attempt(self, now: float, prices: PriceBook | None = None) -> RunnableConfig:
        """Count one more attempt; return the config the chain is called with."""
        if self.attempts == 0:
            self.started = now
            self.usage = UsageCollector(prices)
            self.config = with_handler(self.config, self.usage, first=True)
        elif self.retry_state is not None and self.retry_state.outcome is not None:
            self.retry_state.prepare_for_next_attempt()
        self.attempts += 1
        self.attempt_started = now
        self.usage_before = self.usage.usage if self.usage is not None else None
        self.cost_before = self.cost
        return self.config

    @property
    def cost(self) -> float | None:
        """Dollars of this item's model calls so far (``None``: not priced)."""
        return self.usage.cost if self.usage is not None else None

    def retried(self, error: ItemError, now: float, output: Any = None) -> None:
        """Record the attempt that just ended with ``error`` as one that will be retried
        (``output``: the answer it produced and that was rejected, if any)."""
        collected = self.usage.usage if self.usage is not None else None
        cost = self.cost
        self.history.append(
            Attempt(
                error,
                output=output,
                usage=_usage_since(self.usage_before, collected),
                cost=cost - (self.cost_before or 0.0) if cost is not None else None,
                latency=now - self.attempt_started,
            )
        )
        self.last_error = error


class RunPlan(Generic[InputT, OutputT]):
    """What every attempt of one run shares: the chain, its keywords, retries, time.

    Args:
        runnable: the chain called once per attempt.
        config_for: the RunnableConfig of the item with a given index.
        kwargs: extra keyword arguments for the chain's ``invoke``/``ainvoke``.
        policy: the retry policy (``None``: one attempt).
        clock: the run's clock.
        name: the name of the kit's own run per item.
        observed: whether any callback handler watches chain runs: the kit's own
            run per item is created only then (nobody else could see it).
        reask: re-ask answers that fail to parse (the chain is then called with a
            tap on its model step, see :func:`reask_chain`).
    """

    __slots__ = (
        "_lock",
        "budget",
        "clock",
        "config_for",
        "flex",
        "flex_deadline",
        "flex_saved",
        "kwargs",
        "name",
        "observed",
        "policy",
        "prices",
        "reask",
        "runnable",
    )

    def __init__(
        self,
        runnable: Runnable[InputT, OutputT],
        *,
        config_for: Callable[[int], RunnableConfig],
        kwargs: Mapping[str, Any],
        policy: RetryPolicy | None,
        clock: Clock,
        name: str,
        observed: bool,
        prices: PriceBook | None = None,
        budget: Budget | None = None,
        flex: Runnable[InputT, OutputT] | None = None,
        flex_deadline: float = 0.0,
        reask: Reask | None = None,
    ) -> None:
        if reask is not None:  # a chain that cannot be re-asked raises ConfigurationError
            runnable = reask_chain(runnable)
            flex = reask_chain(flex) if flex is not None else None
        self.reask = reask
        self.runnable = runnable
        self.config_for = config_for
        self.kwargs = dict(kwargs)
        self.policy = policy if policy is not None and policy.max_attempts > 1 else None
        self.clock = clock
        self.name = name
        self.observed = observed
        self.prices = prices
        self.budget = budget
        self.flex = flex
        self.flex_deadline = flex_deadline
        self.flex_saved = 0.0
        self._lock = threading.Lock()

    def runnable_for(self, item: ItemRun[InputT, OutputT]) -> Runnable[InputT, OutputT]:
        """The chain this attempt calls: on flex until the item's flex deadline passed."""
        if self.flex is not None and item.attempt_started - item.started < self.flex_deadline:
            return self.flex
        return self.runnable

    @property
    def stopped(self) -> bool:
        """The run starts no new item: its budget refused a model call."""
        return self.budget is not None and self.budget.exhausted

    def new_item(
        self, seq: int, index: int, value: InputT, key: str | None
    ) -> ItemRun[InputT, OutputT]:
        """A staged item, with its config built (carrying its re-ask state, if any)."""
        item: ItemRun[InputT, OutputT] = ItemRun(seq, index, value, key, self.config_for(index))
        if self.reask is not None:
            item.reask = ReaskState()
            item.config = with_state(item.config, item.reask)
        return item

    def settle(
        self,
        item: ItemRun[InputT, OutputT],
        output: OutputT | None,
        exc: Exception | None,
        *,
        sync: bool,
    ) -> ItemResult[InputT, OutputT] | float:
        """The item's result, or seconds to wait before its next attempt.

        Raises:
            ConfigurationError / EventLoopMismatchError: the error is the run's, not
                the item's (see ``_run_stopper.py``): every item would fail alike.
        """
        now = self.clock()
        collected = item.usage.usage if item.usage is not None else None
        answer = item.reask.take() if item.reask is not None else None
        if exc is None:
            usage = collected or TokenUsage.from_output(output)
            return self._result(item, output, None, usage, now)
        refusal = _budget_refusal(exc)
        if refusal is not None:  # not sent, nothing paid for it: the item did not run
            return self._result(
                item, None, ItemError.from_exception(refusal), collected, now, not_run=True
            )
        stopper = run_stopper(exc, self.kwargs, sync=sync, chain=self.runnable.get_name())
        if stopper is not None:
            # The live error may carry the request's key: chain a redacted stand-in.
            raise stopper from RedactedError.named(
                type(exc).__name__,
                type(exc).__module__,
                exception_message(exc),
                exception_traceback(exc),
            )
        error = ItemError.from_exception(exc)
        if answer is not None and is_parse_error(exc):
            return self._rejected(item, answer, exc, error, collected, now)
        delay: float | None = None
        if self.policy is not None:
            if item.retry_state is None:
                item.retry_state = self.policy.new_state(item.started)
            delay = self.policy.decide(item.retry_state, exc, now)
        if delay is None:
            return self._result(item, None, error, collected, now)
        item.retried(error, now)
        item.not_before = now + delay
        return delay

    def _rejected(
        self,
        item: ItemRun[InputT, OutputT],
        answer: Any,
        exc: Exception,
        error: ItemError,
        usage: TokenUsage | None,
        now: float,
    ) -> ItemResult[InputT, OutputT] | float:
        """The model's answer failed to parse: re-ask at once, or end with the answer kept."""
        assert self.reask is not None and item.reask is not None
        state = item.reask
        state.rejected += 1
        if state.rejected >= self.reask.max_attempts:
            return self._result(item, None, replace(error, output=answer), usage, now)
        item.retried(error, now, output=answer)
        state.extra += follow_up(answer, exc, self.reask.max_error_chars)
        item.not_before = now
        return 0.0

    def _result(
        self,
        item: ItemRun[InputT, OutputT],
        output: OutputT | None,
        error: ItemError | None,
        usage: TokenUsage | None,
        now: float,
        *,
        not_run: bool = False,
    ) -> ItemResult[InputT, OutputT]:
        meter = item.usage.meter if item.usage is not None else None
        if meter is not None and meter.saved:
            with self._lock:
                self.flex_saved += meter.saved
        return ItemResult(
            item.index,
            item.value,
            output,
            error,
            item.attempts,
            now - item.started,
            usage,
            tuple(item.history),
            cost=item.cost,
            not_run=not_run,
        )

    def not_run(
        self, item: ItemRun[InputT, OutputT], reason: ItemError
    ) -> ItemResult[InputT, OutputT]:
        """The result of an item the stopped run will not (or not again) start."""
        now = self.clock()
        usage = item.usage.usage if item.usage is not None else None
        latency = now - item.started if item.attempts else 0.0
        return replace(self._result(item, None, reason, usage, now, not_run=True), latency=latency)


def _budget_refusal(exc: BaseException) -> BudgetExceededError | None:
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            return None
        if isinstance(cause, BudgetExceededError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _usage_since(before: TokenUsage | None, now: TokenUsage | None) -> TokenUsage | None:
    """The tokens counted between two readings of an item's running total."""
    if now is None or now == before:
        return None
    if before is None:
        return now
    return TokenUsage(
        now.input_tokens - before.input_tokens,
        now.output_tokens - before.output_tokens,
        now.total_tokens - before.total_tokens,
    )


def observed(handlers: list[BaseCallbackHandler]) -> bool:
    """Does any handler watch chain runs (or retries)?"""
    return any(not (h.ignore_chain and h.ignore_retry) for h in handlers)
