"""Rate limits and a cap on requests in flight, shared by everything they are given to.

:class:`RateLimit` paces *model requests*, not items: batchkit hands it to every
item's callbacks, and LangChain awaits ``on_chat_model_start`` before each
request, so every model call anywhere in the chain (after a prompt, inside a
``RunnableParallel``, three calls per item) waits for its turn. That is the cap
plain ``max_concurrency`` lacks: it counts items per nesting level, so a chain
that fans out sends more requests than asked for (langchain-ai/langchain #15767).

Waiting is by reservation, never by polling: each request reserves the next free
slot of the request and token buckets under a lock, then sleeps exactly until
then. The lock is a thread lock and sleeps happen where the model call is: on its
own loop for an async call, blocking its thread for a sync one (``chain.batch``'s
worker threads, a sync step inside an async chain). So one limiter can be shared
by several batches, chains, threads and event loops; the cap on requests in
flight is a :class:`~langchain_batchkit._gate.Gate` that serves both kinds of waiter
in one first-come-first-served line.

Adaptive: the configured rates may be higher than the provider's real limit (a
proxy in front of it, a key shared with others), and its 429s may not say when
its window ends. A 429 pauses every request until its ``Retry-After`` (at most
``max_pause``), or, without one, for a short probe that doubles while the 429s
go on; requests already waiting for their turn are re-paced, never fired at
the old pace. The pace the 429 came at becomes a ceiling; the pace restarts at
what actually got through, under it, and creeps up slowly (see :class:`_Pace`).
``x-ratelimit-remaining-*`` running out pauses until the window resets. The cap
on requests in flight is halved by a 429 (at most once per cooldown) and raised
by ``1/cap`` per success (additive increase, multiplicative decrease).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import LLMResult
from langchain_core.rate_limiters import BaseRateLimiter

from langchain_batchkit._callbacks import ModelEventsOnly, usage_of_response
from langchain_batchkit._errors import ConfigurationError, RequestTooLargeError
from langchain_batchkit._gate import Gate
from langchain_batchkit._retry import is_rate_limit, parse_reset, retry_after_seconds
from langchain_batchkit._tokens import (
    DEFAULT_COMPLETION_TOKENS,
    IMAGE_TOKENS,
    TokenEstimator,
    estimate_tokens,
)

__all__ = [
    "DEFAULT_COMPLETION_TOKENS",
    "IMAGE_TOKENS",
    "LimiterStats",
    "RateLimit",
    "RequestTooLargeError",
    "TokenEstimator",
    "estimate_tokens",
    "parse_reset",
]

logger = logging.getLogger(__name__)

#: Seconds of token budget that may be spent at once (requests are evenly spaced instead).
TOKEN_BURST_SECONDS = 10.0
#: The longest a provider's answer may pause every request sharing a limiter (seconds).
DEFAULT_MAX_PAUSE = 60.0


_ENDED_UNREPORTED = asyncio.CancelledError("the model call ended without reporting")


class _Bucket:
    """A token bucket that hands out reservations: it may go into debt, and the
    debt is the wait of whoever reserves next."""

    __slots__ = ("capacity", "last", "level", "rate")

    def __init__(self, per_minute: float, capacity: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = capacity
        self.level = capacity
        self.last = now

    def reserve(self, amount: float, now: float, factor: float, not_before: float) -> float:
        """Reserve ``amount``; return seconds from ``now`` until it may be used.

        Nothing refills before ``not_before`` (the end of a pause), so requests
        queued during a pause are spaced from its end instead of all starting then.
        """
        rate = self.rate * factor
        start = max(now, not_before)
        if start > self.last:
            self.level = min(self.capacity, self.level + (start - self.last) * rate)
            self.last = start
        self.level -= amount
        return (start - now) + (0.0 if self.level >= 0 else -self.level / rate)

    def can_take(self, amount: float, now: float, factor: float) -> bool:
        level = min(self.capacity, self.level + (now - self.last) * self.rate * factor)
        return level >= amount

    def forget_reservations(self) -> None:
        """Drop the debt of reservations not used yet: their holders reserve again."""
        self.level = max(self.level, 0.0)

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


def make_buckets(
    requests_per_minute: float | None,
    tokens_per_minute: float | None,
    *,
    burst: float,
    headroom: float,
    now: float,
) -> tuple[_Bucket | None, _Bucket | None]:
    """The request and token buckets of a budget (``None`` where there is no limit)."""
    requests = (
        _Bucket(requests_per_minute * headroom, burst, now)
        if requests_per_minute is not None
        else None
    )
    tokens = (
        _Bucket(tokens_per_minute * headroom, tokens_per_minute * TOKEN_BURST_SECONDS / 60.0, now)
        if tokens_per_minute is not None
        else None
    )
    return requests, tokens


#: Pace during a 429 episode and the most it restarts at afterwards, as a share of the ceiling.
EPISODE_PACE = 0.95
#: The least the pace restarts at after an episode, as a share of the ceiling.
LOWEST_RESTART = 0.25
#: Spacings (at the lowered pace) of the first probe pause after a 429 without Retry-After.
PROBE_SPACINGS = 2.0
#: How far the pace creeps up, as a share of the ceiling, per provider window of successes...
CREEP = 0.02
#: ... up to this share of the ceiling; beyond it, it probes upward four times slower.
NEAR_CEILING = 0.97
#: The fewest and the most successes taken as one provider window (for the creep): a first
#: 429 after a long clean run (jitter) says little about the window, and must not make the
#: pace crawl back for the rest of the run.
MIN_WINDOW_SUCCESSES = 20
MAX_WINDOW_SUCCESSES = 500


@dataclass(frozen=True, slots=True)
class _Call:
    """A request let through: its token estimate, when it went, the schedule it was in."""

    tokens: int
    sent_at: float
    epoch: int
    pace: float


class _Pace:
    """How much of the configured rates to use, learned from 429s: arithmetic only.

    ``value`` multiplies the configured rates; ``epoch`` names the schedule that
    reservations are made in, and changes whenever the ones already made must be
    made again (the pace went down, a pause began).

    - The first 429 of an *episode* (429s with no success in between, counting only
      requests sent since the last change) makes the pace that request went at the
      ``ceiling``. Without a ``Retry-After`` everyone then pauses: two spacings, doubled
      at each further 429 of the episode, so a window that stays full until it ends
      (a fixed-window proxy) costs a few 429s, not one per request still queued.
    - The first success of a request sent since ends the episode: the provider's
      window reopened between the last refused request and that one (the midpoint is
      taken). The pace restarts at the *goodput* of the cycle that ends there (the
      configured budget's share that got through since the previous episode), between
      :data:`LOWEST_RESTART` and :data:`EPISODE_PACE` of the ceiling. A window never
      lets more through than its limit, so that is at or under the real limit.
    - Each success then raises the pace by :data:`CREEP` of the ceiling per "window" of
      successes (as many as got through before the first 429), and four times slower
      from :data:`NEAR_CEILING` of it on, probing upward: a later 429 comes just above
      the real limit, costs a probe or two, and sets a tight ceiling, every few windows
      at most. The pace never goes above the configured rates.

    Nothing here reads a clock or sleeps: the requests carry their send times.
    """

    __slots__ = (
        "_cycle_start",
        "_delivered",
        "_episode_epoch",
        "_episode_start",
        "_in_episode",
        "_last_refused",
        "_probes",
        "_successes",
        "_upto_episode",
        "_window",
        "ceiling",
        "epoch",
        "value",
    )

    def __init__(self) -> None:
        self.value = 1.0
        self.ceiling = 1.0
        self.epoch = 0
        self._in_episode = False
        self._episode_epoch = 0
        self._episode_start = 0.0
        self._last_refused = 0.0
        self._probes = 0
        self._successes = 0
        self._window: float | None = None  # successes before the first 429
        self._cycle_start: float | None = None  # the first request, then each episode's end
        self._delivered = 0.0  # seconds of configured budget that got through in the cycle
        self._upto_episode = 0.0  # ... by requests sent before the episode began

    def sent(self, now: float) -> None:
        """A request went out (the first cycle starts with the first one)."""
        if self._cycle_start is None:
            self._cycle_start = now

    def repace(self) -> None:
        """Reservations already made must be made again (a pause began)."""
        self.epoch += 1

    def pushback(self, call: _Call, cost: float, *, told_when: bool) -> float | None:
        """A 429 for ``call``, which used ``cost`` seconds of the configured budget.

        Returns ``None`` when it says nothing new (the request went before the last
        change), else the probe pause in seconds (0 when the provider said how long
        to wait); then reservations already made are to be made again.
        """
        if call.epoch != self.epoch:
            return None
        if not self._in_episode:
            self._in_episode = True
            self._probes = 0
            if self._window is None:
                self._window = float(
                    min(max(self._successes, MIN_WINDOW_SUCCESSES), MAX_WINDOW_SUCCESSES)
                )
            self.ceiling = call.pace
            self._upto_episode = self._delivered
            self._episode_start = call.sent_at
            self.value = min(self.value, call.pace * EPISODE_PACE)
            self._episode_epoch = self.epoch + 1
        self._probes += 1
        self._last_refused = call.sent_at
        self.repace()
        if told_when or cost <= 0:
            return 0.0
        return cost / self.value * PROBE_SPACINGS * 2.0 ** (self._probes - 1)

    def success(self, call: _Call, cost: float) -> bool:
        """``call`` got through; ``True`` when that lowered the pace (re-pace then)."""
        self._successes += 1
        self._delivered += cost
        if not self._in_episode:
            if self._window is not None:
                step = self.ceiling * CREEP / self._window
                if self.value >= NEAR_CEILING * self.ceiling:
                    step /= 4
                self.value = min(1.0, self.value + step)
            return False
        if call.epoch < self._episode_epoch:
            if call.sent_at < self._episode_start:
                self._upto_episode += cost  # late news of the cycle that just ended
            return False
        self._in_episode = False
        reopened = (self._last_refused + call.sent_at) / 2
        start = self._cycle_start if self._cycle_start is not None else reopened
        goodput = self._upto_episode / (reopened - start) if reopened > start else self.ceiling
        restart = min(max(goodput, LOWEST_RESTART * self.ceiling), EPISODE_PACE * self.ceiling)
        self._cycle_start = reopened
        self._delivered = cost
        lowered = restart < self.value
        self.value = restart
        if lowered:
            self.repace()
        return lowered


@dataclass(frozen=True, slots=True)
class LimiterStats:
    """What a :class:`RateLimit` has done so far.

    Attributes:
        requests: requests let through.
        waited: requests that had to wait.
        wait_seconds: total seconds requests waited.
        rate_limited: 429 answers seen.
        pauses: pauses started (Retry-After, remaining budget used up, or a probe
            pause after a 429 without Retry-After).
        in_flight: requests open right now (sent, not answered); requests waiting for
            their turn are not counted.
        max_in_flight: the most requests ever open at once.
        in_flight_cap: the current cap (``inf`` when none applies).
        lowest_in_flight_cap: the lowest the cap has been (how hard it backed off).
        pauses_capped: pauses shortened to ``max_pause`` (a provider asked for longer).
        longest_pause_asked: the longest pause a provider asked for, in seconds, before
            capping (``Retry-After``, or a reset with nothing remaining); 0 if none.
        repaced: reservations made again because the pace went down or a pause began
            while they waited (each is still one request).
        pace: the share of the configured rates in use now (adaptive; 1.0 until a 429).
        pace_ceiling: the pace the latest 429 episode began at (1.0 until one).
        paused_seconds: wall time during which pauses held every request back
            (overlapping pauses counted once; ``wait_seconds`` sums each request's wait).
    """

    requests: int
    waited: int
    wait_seconds: float
    rate_limited: int
    pauses: int
    in_flight: int
    max_in_flight: int
    in_flight_cap: float
    lowest_in_flight_cap: float
    pauses_capped: int = 0
    longest_pause_asked: float = 0.0
    repaced: int = 0
    pace: float = 1.0
    pace_ceiling: float = 1.0
    paused_seconds: float = 0.0

    def __str__(self) -> str:
        from langchain_batchkit._display import limiter_stats_text

        return limiter_stats_text(self)

    def _repr_html_(self) -> str:
        from langchain_batchkit._display import limiter_stats_html

        return limiter_stats_html(self)

    def plot(self) -> Any:
        """A figure of these numbers; needs ``pip install 'langchain-batchkit[plot]'``."""
        try:
            from langchain_batchkit._plot import plot_limiter_stats
        except ImportError as exc:
            raise ImportError(
                "LimiterStats.plot() needs matplotlib: pip install 'langchain-batchkit[plot]'"
            ) from exc
        return plot_limiter_stats(self)


class RateLimit(BaseRateLimiter):
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
        clock: monotonic seconds (inject a fake clock in tests).
        sleep: async sleep used for waits (inject a fake one in tests).
        sync_sleep: blocking sleep for :meth:`acquire` and for model calls made in threads.

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
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        sync_sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for name, value in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if value is not None and not _positive(value):
                raise ConfigurationError(f"{name} must be a positive number or None, got {value!r}")
        if max_in_flight is not None and (type(max_in_flight) is not int or max_in_flight < 1):
            raise ConfigurationError(
                f"max_in_flight must be an int >= 1 or None, got {max_in_flight!r}"
            )
        if not _positive(headroom) or headroom > 1:
            raise ConfigurationError(f"headroom must be in (0, 1], got {headroom!r}")
        if not _positive(burst) or burst < 1:
            raise ConfigurationError(f"burst must be a number >= 1, got {burst!r}")
        if not (_positive(cooldown) or cooldown == 0):
            raise ConfigurationError(f"cooldown must be a number >= 0, got {cooldown!r}")
        if not _positive(max_pause):
            raise ConfigurationError(f"max_pause must be a positive number, got {max_pause!r}")
        if token_estimator is not None and not callable(token_estimator):
            raise ConfigurationError("token_estimator must be a callable (messages, params) -> int")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.max_in_flight = max_in_flight
        self.headroom = headroom
        self.adaptive = adaptive
        self.cooldown = cooldown
        self.max_pause = float(max_pause)
        self._estimate = token_estimator or estimate_tokens
        self._clock = clock
        self._sleep = sleep
        self._sync_sleep = sync_sleep
        self._lock = threading.Lock()
        now = clock()
        self._requests, self._tokens = make_buckets(
            requests_per_minute, tokens_per_minute, burst=burst, headroom=headroom, now=now
        )
        self._pace = _Pace()  # multiplies both rates; names the schedule of reservations
        self._paced = self._requests is not None or self._tokens is not None
        self._pause_until = -math.inf
        self._gate = Gate(float(max_in_flight) if max_in_flight is not None else math.inf)
        self._lowest_cap = self._gate.cap
        self._last_decrease = -math.inf
        self._calls: dict[UUID, _Call] = {}
        self._max_open = 0
        self._n_requests = self._n_waited = self._n_429 = self._n_pauses = 0
        self._paused_seconds = 0.0
        self._n_capped = self._n_repaced = 0
        self._longest_asked = 0.0
        self._wait_seconds = 0.0
        self.callback = _LimiterCallback(self)

    def __repr__(self) -> str:
        return (
            f"RateLimit(requests_per_minute={self.requests_per_minute}, "
            f"tokens_per_minute={self.tokens_per_minute}, max_in_flight={self.max_in_flight})"
        )

    # -- LangChain's BaseRateLimiter ----------------------------------------------------------

    def acquire(self, *, blocking: bool = True) -> bool:
        """Reserve one request, blocking the thread until it may start."""
        delay = self._reserve(0, blocking=blocking)
        if delay is None:
            return False
        if delay > 0:
            self._sync_sleep(delay)
        return True

    async def aacquire(self, *, blocking: bool = True) -> bool:
        """Reserve one request, sleeping on this loop until it may start."""
        delay = self._reserve(0, blocking=blocking)
        if delay is None:
            return False
        if delay > 0:
            await self._sleep(delay)
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
            epoch = self._epoch()
            delay = await self._areserve(tokens)
            while delay > 0:
                await self._sleep(delay)
                # A 429 or a pause while we slept re-paces us: wait our turn again.
                delay, epoch = self._next_turn(epoch, tokens)
        except BaseException:
            self._gate.release()
            raise
        self._started(run_id, tokens, epoch)
        task = asyncio.current_task()
        if bind_to_task and task is not None:
            task.add_done_callback(lambda _: self.exit(run_id, error=_ENDED_UNREPORTED))

    def enter_sync(self, run_id: UUID, tokens: int) -> None:
        """The blocking twin of :meth:`enter`, for a model called from a worker thread.

        The thread waits for a slot, then sleeps (``sync_sleep``) until its
        reservation. The slot is freed by :meth:`exit` when the call reports its
        end or error, on whichever thread that happens.
        """
        self._check_fits(tokens)
        self._gate.acquire_sync()
        try:
            epoch = self._epoch()
            delay = self._reserve_blocking(tokens)
            while delay > 0:
                self._sync_sleep(delay)
                delay, epoch = self._next_turn(epoch, tokens)
        except BaseException:
            self._gate.release()
            raise
        self._started(run_id, tokens, epoch)

    def exit(
        self,
        run_id: UUID,
        *,
        used_tokens: int | None = None,
        headers: Mapping[str, str] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Count a request as finished and learn from how it ended."""
        retry_after: float | None = None
        shared: float | None = None
        with self._lock:
            call = self._calls.pop(run_id, None)
            if call is None:
                return
            now = self._clock()
            if self._tokens is not None and used_tokens is not None:
                self._tokens.give_back(call.tokens - used_tokens)
            if error is not None and is_rate_limit(error):
                self._n_429 += 1
                retry_after = retry_after_seconds(error)
                if retry_after is not None:
                    shared = self._capped(retry_after)
                self._on_pushback(now, call, shared)
            elif error is None and self.adaptive:
                if self._paced and self._pace.success(call, self._cost(call.tokens)):
                    self._forget_reservations()
                cap = self._gate.cap
                if cap != math.inf:
                    ceiling = float(self.max_in_flight) if self.max_in_flight else math.inf
                    self._gate.cap = min(ceiling, cap + 1.0 / cap)
            if error is None and headers and self.adaptive:
                self._read_headers(now, headers)
        self._gate.release()
        if retry_after is not None and shared is not None:
            if shared < retry_after:
                logger.warning(
                    "a 429 asked every request to wait %.0f s (Retry-After); pausing "
                    "%.0f s instead (max_pause). Longer waits are quotas or a misbehaving "
                    "proxy; the request itself is retried per its RetryPolicy.",
                    retry_after,
                    shared,
                )
            self._share_pause(shared)

    def stats(self) -> LimiterStats:
        """A snapshot of the counters."""
        with self._lock:
            return LimiterStats(
                requests=self._n_requests,
                waited=self._n_waited,
                wait_seconds=self._wait_seconds,
                rate_limited=self._n_429,
                pauses=self._n_pauses,
                paused_seconds=self._paused_seconds,
                in_flight=len(self._calls),
                max_in_flight=self._max_open,
                in_flight_cap=self._gate.cap,
                lowest_in_flight_cap=self._lowest_cap,
                pauses_capped=self._n_capped,
                longest_pause_asked=self._longest_asked,
                repaced=self._n_repaced,
                pace=self._pace.value,
                pace_ceiling=self._pace.ceiling,
            )

    def estimate(self, messages: Sequence[BaseMessage], params: Mapping[str, Any]) -> int:
        """Tokens a request is expected to cost (the pluggable estimator)."""
        return int(self._estimate(messages, params)) if self._tokens is not None else 0

    # -- hooks for a limiter whose budget lives elsewhere (e.g. one shared by a cluster) ----------

    async def _areserve(self, tokens: int) -> float:
        """Reserve one request and ``tokens``; return the seconds to wait."""
        return self._reserve_blocking(tokens)

    def _reserve_blocking(self, tokens: int) -> float:
        """:meth:`_areserve` for a blocking caller (the thread may wait on a remote budget)."""
        delay = self._reserve(tokens, blocking=True)
        assert delay is not None  # a blocking reservation is always granted
        return delay

    def _share_pause(self, seconds: float) -> None:
        """A 429 asked everyone to wait ``seconds``; a shared limiter tells the others."""

    def _reserve_again(self, tokens: int) -> float:
        """Reserve anew for a request re-paced while it waited; return the seconds to wait.

        It is still one request: only the wait is counted again.
        """
        with self._lock:
            delay = self._book(tokens, self._clock())
            self._wait_seconds += delay
            return delay

    # -- internals (state changes happen under the lock) ------------------------------------------

    def _check_fits(self, tokens: int) -> None:
        limit = self.tokens_per_minute
        if limit is not None and tokens > limit:
            raise RequestTooLargeError(tokens, limit)

    def _capped(self, asked: float) -> float:
        """A pause a provider asked for, cut to ``max_pause`` (and counted) if longer."""
        self._longest_asked = max(self._longest_asked, asked)
        if asked <= self.max_pause:
            return asked
        self._n_capped += 1
        return self.max_pause

    def _epoch(self) -> int:
        with self._lock:
            return self._pace.epoch

    def _next_turn(self, epoch: int, tokens: int) -> tuple[float, int]:
        """After a wait: the further wait, and the schedule it is in."""
        with self._lock:
            current = self._pace.epoch
            if current == epoch:
                return max(0.0, self._pause_until - self._clock()), epoch
            self._n_repaced += 1
        return self._reserve_again(tokens), current

    def _started(self, run_id: UUID, tokens: int, epoch: int) -> None:
        with self._lock:
            now = self._clock()
            self._calls[run_id] = _Call(tokens, now, epoch, self._pace.value)
            self._max_open = max(self._max_open, len(self._calls))
            self._pace.sent(now)

    def _pause_remaining(self) -> float:
        with self._lock:
            return max(0.0, self._pause_until - self._clock())

    def _reserve(self, tokens: int, *, blocking: bool) -> float | None:
        with self._lock:
            now = self._clock()
            if not blocking and (
                self._pause_until > now
                or (
                    self._requests is not None
                    and not self._requests.can_take(1, now, self._pace.value)
                )
            ):
                return None
            delay = self._book(tokens, now)
            self._n_requests += 1
            if delay > 0:
                self._n_waited += 1
                self._wait_seconds += delay
            return delay

    def _book(self, tokens: int, now: float) -> float:
        """Reserve one request and ``tokens`` at the current pace (lock held)."""
        pause, pace = self._pause_until, self._pace.value
        delay = max(0.0, pause - now)
        if self._requests is not None:
            delay = max(delay, self._requests.reserve(1, now, pace, pause))
        if self._tokens is not None and tokens:
            delay = max(delay, self._tokens.reserve(tokens, now, pace, pause))
        return delay

    def _cost(self, tokens: int) -> float:
        """Seconds of the configured budget one request of ``tokens`` uses up."""
        cost = 0.0
        if self._requests is not None:
            cost = 1.0 / self._requests.rate
        if self._tokens is not None and tokens:
            cost = max(cost, tokens / self._tokens.rate)
        return cost

    def _on_pushback(self, now: float, call: _Call, retry_after: float | None) -> None:
        if self.adaptive and self._paced:
            probe = self._pace.pushback(
                call, self._cost(call.tokens), told_when=retry_after is not None
            )
            if probe is not None:
                self._forget_reservations()
                if probe > 0:
                    self._pause(now + min(probe, self.max_pause))
        if retry_after is not None:
            self._pause(now + retry_after)
        if not self.adaptive or now - self._last_decrease < self.cooldown:
            return
        self._last_decrease = now
        open_ = len(self._calls) + 1  # this one was open until now
        cap = max(1.0, math.floor(min(self._gate.cap, open_) * 0.5))
        self._gate.cap = cap
        self._lowest_cap = min(self._lowest_cap, cap)

    def _pause(self, until: float) -> None:
        """No request starts before ``until``; those already waiting wait their turn again."""
        if until > self._pause_until:
            start = max(self._clock(), self._pause_until)
            self._paused_seconds += max(0.0, until - start)  # wall time, overlaps once
            self._pause_until = until
            self._n_pauses += 1
            self._pace.repace()
            self._forget_reservations()

    def _forget_reservations(self) -> None:
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.forget_reservations()

    def _read_headers(self, now: float, headers: Mapping[str, str]) -> None:
        for kind, in_flight_need in (("requests", len(self._calls)), ("tokens", None)):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is None or reset is None:
                continue
            try:
                left = float(remaining)
            except ValueError:
                continue
            need = (
                in_flight_need
                if in_flight_need is not None
                else sum(call.tokens for call in self._calls.values())
            )
            if left <= max(0, need):
                wait = self._capped(reset)
                if wait < reset:
                    logger.warning(
                        "x-ratelimit-remaining-%s ran out with a reset in %.0f s; pausing "
                        "%.0f s instead (max_pause)",
                        kind,
                        reset,
                        wait,
                    )
                self._pause(now + wait)


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


class _LimiterCallback(AsyncCallbackHandler, ModelEventsOnly):
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
