"""Rate limits and a cap on requests in flight, shared by everything they are given to.

:class:`RateLimit` paces *model requests*, not items: batchkit hands it to every
item's callbacks, and LangChain awaits ``on_chat_model_start`` before each
request, so every model call anywhere in the chain (after a prompt, inside a
``RunnableParallel``, three calls per item) waits for its turn. That is the cap
plain ``max_concurrency`` lacks: it counts items per nesting level, so a chain
that fans out sends more requests than asked for (langchain-ai/langchain #15767).

A limiter is a composition of small parts, each in its own module:

- :class:`~langchain_batchkit._limit_settings.RateLimitSettings`: the budgets, validated;
- a reservation backend (:mod:`~langchain_batchkit._backend`): the
  :class:`~langchain_batchkit._reservations.Reservations` core (buckets, pauses, the
  adaptive pace, counters; arithmetic on an injected clock) in this process under
  a thread lock, or the same core in a Ray actor shared by a cluster;
- a :class:`~langchain_batchkit._gate.Gate` on requests in flight, serving waiting
  threads and event loops in one first-come-first-served line, and its AIMD
  controller (:class:`~langchain_batchkit._aimd.RequestCap`);
- the callback (:mod:`~langchain_batchkit._limit_callback`) that routes every
  nested model call here.

This module is the driver: it waits where the model call is (on its own loop for
an async call, blocking its thread for a sync one), by reservation, never by
polling: it reserves the next free slot, sleeps exactly until then, and asks again
only if the schedule changed while it slept. So one limiter can be shared by
several batches, chains, threads and event loops.

Adaptive (``adaptive=True``): a 429 pauses every request and re-paces those
waiting, and the pace settles under a limit the provider never stated (see
:mod:`~langchain_batchkit._reservations` and :mod:`~langchain_batchkit._pace`); the
cap on requests in flight is halved by a 429 and grows back per success (see
:mod:`~langchain_batchkit._aimd`, also for how it meets ``max_concurrency="auto"``).
"""

from __future__ import annotations

import asyncio
import math
import threading
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from uuid import UUID

from langchain_core.messages import BaseMessage
from langchain_core.rate_limiters import BaseRateLimiter

from langchain_batchkit._aimd import RequestCap
from langchain_batchkit._backend import LocalReservations, ReservationBackend
from langchain_batchkit._clock import Clock, as_clock
from langchain_batchkit._errors import ConfigurationError, RequestTooLargeError
from langchain_batchkit._flex import is_flex_unavailable
from langchain_batchkit._gate import Gate
from langchain_batchkit._limit_callback import LimiterCallback
from langchain_batchkit._limit_settings import DEFAULT_MAX_PAUSE, RateLimitSettings, SettingsView
from langchain_batchkit._limit_stats import LimiterStats
from langchain_batchkit._reservations import Outcome, Turn
from langchain_batchkit._retry import is_rate_limit, parse_reset, retry_after_seconds
from langchain_batchkit._tokens import (
    DEFAULT_COMPLETION_TOKENS,
    IMAGE_TOKENS,
    TokenEstimator,
    estimate_tokens,
)

__all__ = [
    "DEFAULT_COMPLETION_TOKENS",
    "DEFAULT_MAX_PAUSE",
    "IMAGE_TOKENS",
    "LimiterStats",
    "RateLimit",
    "RateLimitSettings",
    "RequestTooLargeError",
    "TokenEstimator",
    "estimate_tokens",
    "parse_reset",
]

_ENDED_UNREPORTED = asyncio.CancelledError("the model call ended without reporting")


class RateLimit(SettingsView, BaseRateLimiter):
    """Requests and tokens per minute, and requests in flight, shared by reference.

    Pass it to ``batchkit(chain, rate_limit=...)`` to pace every model request the
    chain makes; pass the same object to several kits to share one budget. It is
    also a LangChain ``BaseRateLimiter``, so ``ChatOpenAI(rate_limiter=limit)``
    works (that path counts requests only: LangChain's hook sees no tokens and
    cannot cap requests in flight). Do not do both for the same model: each
    request would be counted twice.

    Args:
        requests_per_minute: request budget; ``None`` for no request pacing.
        tokens_per_minute: token budget (estimated before, corrected after each call).
            A request estimated above it fails at once with
            :class:`RequestTooLargeError` (it could never fit).
        max_in_flight: the most requests in flight at once, across every chain and
            batch using this limiter (``None``: no cap until the provider pushes back).
        burst: requests that may start back to back before pacing applies (1 = evenly
            spaced, which keeps a window-based provider limit from being hit).
        headroom: the fraction of the limits to use. Requests paced at exactly the
            limit arrive with network jitter, and a provider counting a sliding window
            then sees L+1 requests in a window about half the time a request overtakes
            an earlier one; 0.97 leaves 3% for that (1.0 to use every last request).
        adaptive: learn from 429s, for a provider whose real limit is below the
            configured one: pause for a probe when they do not say how long, re-pace
            requests already waiting, settle under the rate they came at and probe
            upward slowly (``stats().pace``), halve the in-flight cap; and pause when
            ``x-ratelimit-remaining-*`` runs out (see the module docs). The pace never
            goes above the configured rates. ``Retry-After`` is obeyed either way.
        cooldown: seconds between two halvings of the in-flight cap.
        max_pause: the longest one answer may pause every request sharing this limiter.
            A ``Retry-After`` (or ``x-ratelimit-reset-*``) beyond it is cut to it,
            counted in :meth:`stats` and logged: an hour's ``Retry-After`` is a daily
            quota or a misbehaving proxy, not a per-minute window, and must not freeze
            every batch sharing the limiter. The default, 60 s, waits out any
            per-minute window in full. The request that got the answer is retried by
            its :class:`~langchain_batchkit.RetryPolicy`, which caps its own wait
            (``max_retry_after``).
        token_estimator: ``(messages, invocation_params) -> tokens``; default
            :func:`estimate_tokens`.
        clock: a :class:`~langchain_batchkit.Clock` (monotonic seconds, an async
            ``sleep`` for model calls on a loop, a blocking ``sleep_sync`` for
            :meth:`acquire` and model calls in threads); inject
            :class:`~langchain_batchkit.testing.FakeClock` in tests. A bare
            ``() -> float`` is taken as the time, with the real sleeps.
        sleep: deprecated, pass ``clock=``; an async sleep for waits.
        sync_sleep: deprecated, pass ``clock=``; a blocking sleep for waits.

    The keywords build a :class:`RateLimitSettings` (``limit.settings``);
    :meth:`from_settings` takes one ready-made.

    Example:
        >>> limit = RateLimit(requests_per_minute=500, tokens_per_minute=200_000)
        >>> kit = batchkit(chain, rate_limit=limit)   # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_in_flight: int | None = None,
        burst: float = 1.0,
        headroom: float = 0.97,
        adaptive: bool = True,
        cooldown: float = 1.0,
        max_pause: float = DEFAULT_MAX_PAUSE,
        token_estimator: TokenEstimator | None = None,
        clock: Clock | Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        sync_sleep: Callable[[float], None] | None = None,
    ) -> None:
        if sleep is not None or sync_sleep is not None:
            warnings.warn(
                "RateLimit(sleep=..., sync_sleep=...) is deprecated and goes in the next "
                "release: pass one clock= with both sleeps (a Clock, e.g. testing.FakeClock)",
                DeprecationWarning,
                stacklevel=2,
            )
        settings = RateLimitSettings(
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            max_in_flight=max_in_flight,
            burst=burst,
            headroom=headroom,
            adaptive=adaptive,
            cooldown=cooldown,
            max_pause=max_pause,
            token_estimator=token_estimator,
        )
        self._compose(settings, as_clock(clock, sleep, sync_sleep), None)

    @classmethod
    def from_settings(
        cls,
        settings: RateLimitSettings,
        *,
        clock: Clock | Callable[[], float] | None = None,
        backend: ReservationBackend | None = None,
    ) -> RateLimit:
        """A limiter built from ready-made settings.

        Args:
            settings: the budgets (shared as a value: this limiter's state is its own).
            clock: as for the constructor.
            backend: where reservations are made; by default a core in this process.
                :class:`~langchain_batchkit.ray.ClusterRateLimit` passes one that
                reserves from its cluster-wide actor.

        Example:
            >>> settings = RateLimitSettings(requests_per_minute=500)
            >>> RateLimit.from_settings(settings).settings is settings
            True
        """
        limit = cls.__new__(cls)
        limit._compose(settings, as_clock(clock), backend)
        return limit

    def _compose(
        self, settings: RateLimitSettings, clock: Clock, backend: ReservationBackend | None
    ) -> None:
        if not isinstance(settings, RateLimitSettings):
            raise ConfigurationError(f"settings must be a RateLimitSettings, got {settings!r}")
        self._settings = settings
        self._clock = clock
        self._estimate = settings.token_estimator or estimate_tokens
        self._backend = backend if backend is not None else LocalReservations(settings, clock)
        cap = float(settings.max_in_flight) if settings.max_in_flight is not None else math.inf
        self._gate = Gate(cap)
        self._cap = RequestCap(cap, settings.cooldown)
        self._lock = threading.Lock()  # guards _open, _max_open and _cap
        self._open: set[UUID] = set()
        self._max_open = 0
        self.callback = LimiterCallback(self)

    # -- LangChain's BaseRateLimiter ----------------------------------------------------------

    def acquire(self, *, blocking: bool = True) -> bool:
        """Reserve one request, blocking the thread until it may start."""
        turn = self._backend.reserve(0, blocking=blocking)
        if turn is None:
            return False
        if turn.delay > 0:
            self._clock.sleep_sync(turn.delay)
        return True

    async def aacquire(self, *, blocking: bool = True) -> bool:
        """Reserve one request, sleeping on this loop until it may start."""
        turn = await self._backend.areserve(0, blocking=blocking)
        if turn is None:
            return False
        if turn.delay > 0:
            await self._clock.sleep(turn.delay)
        return True

    # -- the request gate used through callbacks --------------------------------------------

    async def enter(self, run_id: UUID, tokens: int, *, bind_to_task: bool = True) -> None:
        """Wait for a slot in flight and for the rate, then count the request as started.

        A cancelled model call never reports its end, so by default the slot is also
        freed when the current task ends (:meth:`exit` is a no-op for calls that did
        report). ``bind_to_task=False`` is for a task that is not the model call's
        own (a throw-away loop running a sync call's callback): :meth:`exit` alone
        frees the slot then.

        Raises:
            RequestTooLargeError: ``tokens`` is above ``tokens_per_minute``.
        """
        self._check_fits(tokens)
        await self._gate.acquire()
        try:
            turn = _granted(await self._backend.areserve(tokens))
            while turn.delay > 0:
                await self._clock.sleep(turn.delay)
                # A 429 or a pause while we slept re-paces us: wait our turn again.
                turn = await self._backend.anext_turn(turn, tokens)
            self._started(run_id, tokens, turn.epoch)
        except BaseException:
            self._gate.release()
            raise
        task = asyncio.current_task()
        if bind_to_task and task is not None:
            task.add_done_callback(lambda _: self.exit(run_id, error=_ENDED_UNREPORTED))

    def enter_sync(self, run_id: UUID, tokens: int) -> None:
        """The blocking twin of :meth:`enter`, for a model called from a worker thread.

        The thread waits for a slot, then sleeps (the clock's ``sleep_sync``) until
        its reservation. The slot is freed by :meth:`exit` when the call reports its
        end or error, on whichever thread that happens.
        """
        self._check_fits(tokens)
        self._gate.acquire_sync()
        try:
            turn = _granted(self._backend.reserve(tokens))
            while turn.delay > 0:
                self._clock.sleep_sync(turn.delay)
                turn = self._backend.next_turn(turn, tokens)
            self._started(run_id, tokens, turn.epoch)
        except BaseException:
            self._gate.release()
            raise

    def exit(
        self,
        run_id: UUID,
        *,
        used_tokens: int | None = None,
        headers: Mapping[str, str] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Count a request as finished and learn from how it ended."""
        with self._lock:
            if run_id not in self._open:
                return
            self._open.discard(run_id)
            open_requests = len(self._open) + 1  # this one was open until now
        # flex short of capacity is not the provider pacing us: no pause, no slower pace
        rate_limited = error is not None and is_rate_limit(error) and not is_flex_unavailable(error)
        outcome = Outcome(
            ok=error is None,
            rate_limited=rate_limited,
            retry_after=retry_after_seconds(error) if error is not None and rate_limited else None,
            used_tokens=used_tokens,
            headers=headers if error is None else None,
        )
        try:
            self._backend.settle(run_id, outcome)
            if self.adaptive:
                self._adapt_cap(outcome, open_requests)
        finally:
            self._gate.release()

    def stats(self) -> LimiterStats:
        """A snapshot of the counters.

        The in-flight figures are this limiter's; the rest are its backend's (for a
        :class:`~langchain_batchkit.ray.ClusterRateLimit`, every worker's together).
        """
        counters = self._backend.stats()
        with self._lock:
            return replace(
                counters,
                in_flight=len(self._open),
                max_in_flight=self._max_open,
                in_flight_cap=self._gate.cap,
                lowest_in_flight_cap=self._cap.lowest,
            )

    def estimate(self, messages: Sequence[BaseMessage], params: Mapping[str, Any]) -> int:
        """Tokens a request is expected to cost (the pluggable estimator)."""
        if self.tokens_per_minute is None:
            return 0
        return int(self._estimate(messages, params))

    # -- internals ----------------------------------------------------------------------------

    def _check_fits(self, tokens: int) -> None:
        limit = self.tokens_per_minute
        if limit is not None and tokens > limit:
            raise RequestTooLargeError(tokens, limit)

    def _started(self, run_id: UUID, tokens: int, epoch: int) -> None:
        self._backend.start(run_id, tokens, epoch)
        with self._lock:
            self._open.add(run_id)
            self._max_open = max(self._max_open, len(self._open))

    def _adapt_cap(self, outcome: Outcome, open_requests: int) -> None:
        with self._lock:
            if outcome.rate_limited:
                changed = self._cap.pushback(self._clock(), open_requests)
            else:
                changed = outcome.ok and self._cap.success()
            if changed:
                self._gate.cap = self._cap.value

    def _pause(self, until: float) -> None:
        """Start no request before ``until`` (tests/test_pictures.py starts pauses so)."""
        self._backend.pause(until - self._clock())


def _granted(turn: Turn | None) -> Turn:
    assert turn is not None  # a blocking reservation is always granted
    return turn
