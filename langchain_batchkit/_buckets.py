"""The budgets a rate limit reserves from: buckets that may go into debt.

A request is charged an amount from each bucket; what a bucket answers is how long
the request must wait before it may use what it took. Debt is the next caller's
wait, so waiting is by reservation, never by polling.

Today both budgets (requests and tokens per minute) are :class:`RefillingBucket`s:
a rate, a burst capacity, refills paced by the adaptive ``factor``. A budget that
never refills (a spending cap) is one more kind of :class:`Bucket`: its
``reserve`` refuses what would overdraw it instead of making the caller wait,
``forget_reservations`` does nothing and ``seconds_for`` is 0.
"""

from __future__ import annotations

from typing import Protocol

from langchain_batchkit._limit_settings import RateLimitSettings

__all__ = ["TOKEN_BURST_SECONDS", "Bucket", "RefillingBucket", "make_buckets"]

#: Seconds of token budget that may be spent at once (requests are evenly spaced instead).
TOKEN_BURST_SECONDS = 10.0


class Bucket(Protocol):
    """One budget a request draws from; reservations may run it into debt (a wait)."""

    def reserve(self, amount: float, now: float, factor: float, not_before: float) -> float:
        """Take ``amount``; return seconds from ``now`` until it may be used."""
        ...

    def can_take(self, amount: float, now: float, factor: float) -> bool:
        """Whether ``amount`` could be taken now without waiting."""
        ...

    def forget_reservations(self) -> None:
        """Drop the debt of reservations not used yet (their holders book again)."""
        ...

    def give_back(self, amount: float) -> None:
        """Return ``amount`` (negative: charge more) once a request's real cost is known."""
        ...

    def seconds_for(self, amount: float) -> float:
        """Seconds of this budget ``amount`` uses up at the configured rate (0: none)."""
        ...


class RefillingBucket:
    """A token bucket that hands out reservations: it may go into debt, and the
    debt is the wait of whoever reserves next.

    ``factor`` (the adaptive pace) scales the refill rate of each call.
    """

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
        """Whether ``amount`` is there now."""
        level = min(self.capacity, self.level + (now - self.last) * self.rate * factor)
        return level >= amount

    def forget_reservations(self) -> None:
        """Drop the debt of reservations not used yet: their holders reserve again."""
        self.level = max(self.level, 0.0)

    def give_back(self, amount: float) -> None:
        """Return ``amount`` unused (never above capacity)."""
        self.level = min(self.capacity, self.level + amount)

    def seconds_for(self, amount: float) -> float:
        """Seconds of refill ``amount`` takes at the configured rate."""
        return amount / self.rate


def make_buckets(settings: RateLimitSettings, now: float) -> dict[str, Bucket]:
    """The buckets ``settings`` asks for, by kind (``"requests"``, ``"tokens"``)."""
    buckets: dict[str, Bucket] = {}
    if settings.requests_per_minute is not None:
        rpm = settings.requests_per_minute
        buckets["requests"] = RefillingBucket(rpm * settings.headroom, settings.burst, now)
    if settings.tokens_per_minute is not None:
        tpm = settings.tokens_per_minute
        burst = tpm * TOKEN_BURST_SECONDS / 60.0
        buckets["tokens"] = RefillingBucket(tpm * settings.headroom, burst, now)
    return buckets
