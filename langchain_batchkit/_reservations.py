"""The reservation core of a rate limit: buckets, pauses, the adaptive pace and counters.

Every decision a rate limit makes about *when* a request may go is made here, and
nothing else: no lock, no sleep, no event loop, no threads. The time is read
through an injected clock, so a fake one drives it in tests; a
:class:`~langchain_batchkit.RateLimit` holds one under a thread lock and sleeps
where its model call is, and a :class:`~langchain_batchkit.ray.ClusterRateLimit`
runs this very class as a Ray actor (an actor runs one call at a time, so it
needs no lock either) that every worker reserves from.

A request's life here::

    reserve(tokens) -> Turn(delay, epoch)    wait delay (the caller sleeps)
    next_turn(turn, tokens) -> Turn          after the wait: 0 to go, or wait again
    start(call_id, tokens, epoch)            it went out
    settle(call_id, Outcome(...))            it ended: usage, a 429, headers

A turn belongs to a schedule (``epoch``); when the pace goes down or a pause
begins the schedule changes, the debts of reservations not used yet are forgotten,
and each waiter books again in :meth:`Reservations.next_turn` (it is still one
request). Outcomes carry no exception objects, only what the core learns from
them, so the core may live in another process.

Adaptive: the configured rates may be higher than the provider's real limit (a
proxy in front of it, a key shared with others), and its 429s may not say when
its window ends. A 429 pauses every request until its ``Retry-After`` (at most
``max_pause``), or, without one, for a short probe that doubles while the 429s
go on; requests already waiting for their turn are re-paced, never fired at the
old pace. The pace the 429 came at becomes a ceiling; the pace restarts at what
actually got through, under it, and creeps up slowly (see
:class:`~langchain_batchkit._pace.Pace`). ``x-ratelimit-remaining-*`` running out
pauses until the window resets.

The budgets are buckets (:mod:`~langchain_batchkit._buckets`), by kind, and each
request is charged an amount of each kind (:meth:`Reservations._amounts`). A
dollar cap is one more bucket, of the kind that refuses instead of waiting
(:class:`~langchain_batchkit._spending.SpendingCap`): given ``usd=``, the core
carries one, and :meth:`Reservations.spend` reaches it, so a Ray cluster's
workers share one :class:`~langchain_batchkit.Budget` through the same actor.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_batchkit._buckets import make_buckets
from langchain_batchkit._limit_settings import RateLimitSettings
from langchain_batchkit._limit_stats import LimiterStats
from langchain_batchkit._pace import Call, Pace
from langchain_batchkit._retry import parse_reset
from langchain_batchkit._spending import SpendingCap

__all__ = ["Outcome", "Reservations", "Turn"]

logger = logging.getLogger(__name__)

_SPENDING_METHODS = frozenset(
    {"reserve", "settle", "release", "add_spent", "resumed", "recorded", "exhausted", "stats"}
)


@dataclass(frozen=True, slots=True)
class Turn:
    """A reservation granted: wait ``delay`` seconds, in the schedule ``epoch``."""

    delay: float
    epoch: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a model call ended, as much as the reservations learn from it.

    Attributes:
        ok: it succeeded.
        rate_limited: it failed with a 429.
        retry_after: the 429's ``Retry-After`` in seconds, if it said.
        used_tokens: the tokens the response reported (corrects the estimate).
        headers: the response's ``x-ratelimit-*`` headers (lower-case names).
    """

    ok: bool = True
    rate_limited: bool = False
    retry_after: float | None = None
    used_tokens: int | None = None
    headers: Mapping[str, str] | None = None


class Reservations:
    """Request and token budgets, one pause for all, an adaptive pace, and counters.

    Args:
        settings: the budgets and whether to adapt.
        clock: monotonic seconds; the only way time gets in.

    Example:
        >>> now = [0.0]
        >>> core = Reservations(RateLimitSettings(requests_per_minute=60, headroom=1.0),
        ...                     clock=lambda: now[0])
        >>> core.reserve(), core.reserve()
        (Turn(delay=0.0, epoch=0), Turn(delay=1.0, epoch=0))
        >>> now[0] = 1.0
        >>> core.next_turn(Turn(1.0, 0))
        Turn(delay=0.0, epoch=0)
    """

    __slots__ = (
        "_buckets",
        "_calls",
        "_clock",
        "_given_back",
        "_longest_asked",
        "_marks",
        "_max_open",
        "_n_429",
        "_n_capped",
        "_n_pauses",
        "_n_repaced",
        "_n_requests",
        "_n_waited",
        "_pace",
        "_pause_until",
        "_paused_seconds",
        "_settings",
        "_spending",
        "_wait_seconds",
    )

    def __init__(
        self,
        settings: RateLimitSettings,
        clock: Callable[[], float] = time.monotonic,
        *,
        usd: float | None = None,
    ) -> None:
        self._settings = settings
        self._spending = SpendingCap(usd) if usd is not None else None
        self._clock = clock
        self._buckets = make_buckets(settings, clock())
        self._pace = Pace()  # multiplies every rate; names the schedule of reservations
        self._pause_until = -math.inf
        self._calls: dict[Hashable, Call] = {}
        self._marks: dict[Hashable, int] = {}  # the token bucket's mark as each call went
        self._max_open = self._n_requests = self._n_waited = self._n_429 = 0
        self._n_pauses = self._n_capped = self._n_repaced = self._given_back = 0
        self._wait_seconds = self._paused_seconds = self._longest_asked = 0.0

    def __repr__(self) -> str:
        return f"Reservations({', '.join(self._buckets) or 'no budget'}, pace={self._pace.value:g})"

    def reserve(self, tokens: int = 0, *, blocking: bool = True) -> Turn | None:
        """Reserve one request and ``tokens``; the turn says how long to wait first.

        With ``blocking=False`` nothing is reserved and ``None`` is returned when the
        request could not start at once.
        """
        now = self._clock()
        if not blocking and not self._free_now(tokens, now):
            return None
        delay = self._book(tokens, now)
        self._n_requests += 1
        if delay > 0:
            self._n_waited += 1
            self._wait_seconds += delay
        return Turn(delay, self._pace.epoch)

    def next_turn(self, turn: Turn, tokens: int = 0) -> Turn:
        """After waiting out ``turn``: go now (delay 0), or the further wait.

        If the schedule changed meanwhile (a 429 lowered the pace, a pause began), the
        reservation is made anew at the current pace; it is still one request.
        """
        now = self._clock()
        epoch = self._pace.epoch
        if turn.epoch == epoch:
            return Turn(max(0.0, self._pause_until - now), epoch)
        self._n_repaced += 1
        delay = self._book(tokens, now)
        self._wait_seconds += delay
        return Turn(delay, epoch)

    def start(self, call_id: Hashable, tokens: int, epoch: int) -> None:
        """The request ``call_id`` went out, in the schedule of its last turn."""
        now = self._clock()
        self._calls[call_id] = Call(tokens, now, epoch, self._pace.value)
        if (bucket := self._buckets.get("tokens")) is not None:
            self._marks[call_id] = bucket.mark()
        self._max_open = max(self._max_open, len(self._calls))
        self._pace.sent(now)

    def settle(self, call_id: Hashable, outcome: Outcome) -> None:
        """The request ``call_id`` ended: correct its tokens and learn from how.

        A 429 pauses everyone until its ``Retry-After`` (at most ``max_pause``) and,
        when adaptive, lowers the pace (with a probe pause if it did not say how
        long); a success may end a 429 episode or creep the pace up; headers saying
        the remaining budget ran out pause until the reset. Unknown ids are ignored.
        """
        call = self._calls.pop(call_id, None)
        since = self._marks.pop(call_id, None)
        if call is None:
            return
        now = self._clock()
        if outcome.used_tokens is not None and "tokens" in self._buckets:
            self.give_back(call.tokens - outcome.used_tokens, since=since)
        adaptive = self._settings.adaptive
        if outcome.rate_limited:
            self._n_429 += 1
            told = outcome.retry_after
            pause = None
            if told is not None and (pause := self._capped(told)) < told:
                logger.warning(
                    "a 429 asked every request to wait %.0f s (Retry-After); pausing "
                    "%.0f s instead (max_pause). Longer waits are quotas or a misbehaving "
                    "proxy; the request itself is retried per its RetryPolicy.",
                    told,
                    pause,
                )
            if adaptive and self._buckets:
                cost = self._cost(call.tokens)
                probe = self._pace.pushback(call, cost, told_when=told is not None)
                if probe is not None:
                    self._forget_reservations()
                    if probe > 0:
                        self._hold_until(now + min(probe, self._settings.max_pause))
            if pause is not None:
                self._hold_until(now + pause)
        elif outcome.ok and adaptive:
            if self._buckets and self._pace.success(call, self._cost(call.tokens)):
                self._forget_reservations()
            if outcome.headers:
                self._read_headers(now, outcome.headers)

    def pause(self, seconds: float) -> None:
        """Start no request for ``seconds`` from now; those waiting book again after it."""
        self._hold_until(self._clock() + max(0.0, seconds))

    def give_back(self, tokens: int, *, since: int | None = None) -> None:
        """Correct an estimate: return unused ``tokens`` (negative: charge more).

        ``since`` is the token bucket's mark when the request went: what comes back is
        capped by the debt still owed since then (see :mod:`~langchain_batchkit._buckets`).
        The counter counts what was asked back, whether or not the bucket could take it.
        """
        bucket = self._buckets.get("tokens")
        if bucket is not None and tokens:
            bucket.give_back(tokens, since)
            self._given_back += tokens

    def stats(self) -> LimiterStats:
        """A snapshot of the counters (no in-flight cap: that is the caller's)."""
        return LimiterStats(
            requests=self._n_requests,
            waited=self._n_waited,
            wait_seconds=self._wait_seconds,
            rate_limited=self._n_429,
            pauses=self._n_pauses,
            in_flight=len(self._calls),
            max_in_flight=self._max_open,
            in_flight_cap=math.inf,
            lowest_in_flight_cap=math.inf,
            pauses_capped=self._n_capped,
            longest_pause_asked=self._longest_asked,
            repaced=self._n_repaced,
            pace=self._pace.value,
            pace_ceiling=self._pace.ceiling,
            paused_seconds=self._paused_seconds,
            tokens_given_back=self._given_back,
        )

    def spend(self, method: str, *args: Any) -> Any:
        """Call ``method`` of the dollar cap this core carries (``usd=``): ``reserve``,
        ``settle``, ``release``, ``add_spent``, ``resumed``, ``recorded``,
        ``exhausted`` or ``stats`` (see :class:`SpendingCap`)."""
        if self._spending is None:
            raise ValueError("this reservation core carries no dollar cap (usd=None)")
        if method not in _SPENDING_METHODS:
            raise ValueError(f"no such spending method: {method!r}")
        return getattr(self._spending, method)(*args)

    # -- internals --------------------------------------------------------------------------

    def _amounts(self, tokens: int) -> dict[str, float]:
        """What one request of ``tokens`` takes from each kind of bucket."""
        return {"requests": 1.0, "tokens": float(tokens)}

    def _free_now(self, tokens: int, now: float) -> bool:
        if self._pause_until > now:
            return False
        pace = self._pace.value
        amounts = self._amounts(tokens)
        return all(
            bucket.can_take(amounts[kind], now, pace)
            for kind, bucket in self._buckets.items()
            if amounts[kind]
        )

    def _book(self, tokens: int, now: float) -> float:
        """Reserve one request and ``tokens`` at the current pace."""
        pause, pace = self._pause_until, self._pace.value
        delay = max(0.0, pause - now)
        amounts = self._amounts(tokens)
        for kind, bucket in self._buckets.items():
            if amounts[kind]:
                delay = max(delay, bucket.reserve(amounts[kind], now, pace, pause))
        return delay

    def _cost(self, tokens: int) -> float:
        """Seconds of the configured budget one request of ``tokens`` uses up."""
        amounts = self._amounts(tokens)
        return max(
            (b.seconds_for(amounts[k]) for k, b in self._buckets.items() if amounts[k]),
            default=0.0,
        )

    def _capped(self, asked: float) -> float:
        """A pause a provider asked for, cut to ``max_pause`` (and counted) if longer."""
        self._longest_asked = max(self._longest_asked, asked)
        if asked <= self._settings.max_pause:
            return asked
        self._n_capped += 1
        return self._settings.max_pause

    def _hold_until(self, until: float) -> None:
        """No request starts before ``until``; those already waiting wait their turn again."""
        if until > self._pause_until:
            start = max(self._clock(), self._pause_until)
            self._paused_seconds += max(0.0, until - start)  # wall time, overlaps once
            self._pause_until = until
            self._n_pauses += 1
            self._pace.repace()
            self._forget_reservations()

    def _forget_reservations(self) -> None:
        for bucket in self._buckets.values():
            bucket.forget_reservations()

    def _read_headers(self, now: float, headers: Mapping[str, str]) -> None:
        need = {
            "requests": len(self._calls),
            "tokens": sum(call.tokens for call in self._calls.values()),
        }
        for kind, open_need in need.items():
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is None or reset is None:
                continue
            try:
                left = float(remaining)
            except ValueError:
                continue
            if left <= max(0, open_need):
                wait = self._capped(reset)
                if wait < reset:
                    logger.warning(
                        "x-ratelimit-remaining-%s ran out with a reset in %.0f s; pausing "
                        "%.0f s instead (max_pause)",
                        kind,
                        reset,
                        wait,
                    )
                self._hold_until(now + wait)
