"""The one budget a whole Ray cluster reserves from, as a plain class (run as an actor)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from langchain_batchkit._limits import make_buckets

__all__ = ["ClusterLimiterStats", "RateLimitService"]


@dataclass(frozen=True, slots=True)
class ClusterLimiterStats:
    """What the cluster's shared budget has handed out so far (every worker together).

    Attributes:
        requests: reservations made (one per model request, cluster-wide).
        waited: reservations that were told to wait.
        wait_seconds: total seconds those reservations were told to wait.
        pauses: pauses asked for by workers that met a 429 with ``Retry-After``.
        tokens_given_back: net tokens returned after responses reported their usage
            (estimate minus usage, summed; negative when requests used more).
    """

    requests: int
    waited: int
    wait_seconds: float
    pauses: int
    tokens_given_back: int


class RateLimitService:
    """Requests- and tokens-per-minute buckets that every worker of a cluster reserves from.

    :class:`~langchain_batchkit.ray.ClusterRateLimit` runs one of these as a Ray
    actor; it is a plain class so its arithmetic can be tested on a fake clock
    without Ray. An actor runs one call at a time, so the buckets need no lock, and
    every reservation is computed on *this* process's monotonic clock: a worker is
    told how long to wait from the moment the actor answered, never a time of day,
    so worker clocks never need to agree.

    A pause (some worker met a 429 with ``Retry-After``) moves the start of every
    later reservation to the pause's end and the buckets pace from there, so
    requests resume evenly spaced instead of all at once when the pause ends.

    Args:
        requests_per_minute: request budget, or ``None``.
        tokens_per_minute: token budget, or ``None``.
        burst: requests that may start back to back (1 = evenly spaced).
        headroom: fraction of the budgets to use (see :class:`RateLimit`).
        clock: monotonic seconds.

    Example:
        >>> service = RateLimitService(requests_per_minute=60, tokens_per_minute=None)
        >>> service.reserve(0), round(service.reserve(0), 2)
        (0.0, 1.03)
    """

    __slots__ = (
        "_clock",
        "_given_back",
        "_n_pauses",
        "_n_requests",
        "_n_waited",
        "_pause_until",
        "_requests",
        "_tokens",
        "_wait_seconds",
    )

    def __init__(
        self,
        *,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        burst: float = 1.0,
        headroom: float = 0.97,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        now = clock()
        self._requests, self._tokens = make_buckets(
            requests_per_minute, tokens_per_minute, burst=burst, headroom=headroom, now=now
        )
        self._pause_until = -math.inf
        self._n_requests = self._n_waited = self._n_pauses = self._given_back = 0
        self._wait_seconds = 0.0

    def reserve(self, tokens: int = 0, blocking: bool = True) -> float | None:
        """Reserve one request and ``tokens``; return the seconds to wait before sending it.

        With ``blocking=False`` nothing is reserved and ``None`` is returned when the
        request could not start at once.
        """
        now = self._clock()
        paused = self._pause_until
        if not blocking and (
            paused > now or (self._requests is not None and not self._requests.can_take(1, now, 1))
        ):
            return None
        delay = max(0.0, paused - now)
        if self._requests is not None:
            delay = max(delay, self._requests.reserve(1, now, 1.0, paused))
        if self._tokens is not None and tokens > 0:
            delay = max(delay, self._tokens.reserve(tokens, now, 1.0, paused))
        self._n_requests += 1
        if delay > 0:
            self._n_waited += 1
            self._wait_seconds += delay
        return delay

    def pause(self, seconds: float) -> None:
        """Start no request for ``seconds`` from now (a 429's ``Retry-After``), cluster-wide."""
        until = self._clock() + max(0.0, seconds)
        if until > self._pause_until:
            self._pause_until = until
            self._n_pauses += 1

    def give_back(self, tokens: int) -> None:
        """Correct a request's estimate: return unused ``tokens`` (negative: charge more)."""
        if self._tokens is not None and tokens:
            self._tokens.give_back(tokens)
            self._given_back += tokens

    def stats(self) -> ClusterLimiterStats:
        """A snapshot of the counters."""
        return ClusterLimiterStats(
            requests=self._n_requests,
            waited=self._n_waited,
            wait_seconds=self._wait_seconds,
            pauses=self._n_pauses,
            tokens_given_back=self._given_back,
        )
