"""The budgets a rate limit reserves from: buckets that may go into debt.

A request is charged an amount from each bucket; what a bucket answers is how long
the request must wait before it may use what it took. Debt is the next caller's
wait, so waiting is by reservation, never by polling.

Today both budgets (requests and tokens per minute) are :class:`RefillingBucket`s:
a rate, a burst capacity, refills paced by the adaptive ``factor``. A budget that
never refills (a spending cap) is one more kind of :class:`Bucket`: its
``reserve`` refuses what would overdraw it instead of making the caller wait,
``forget_reservations`` does nothing and ``seconds_for`` is 0.

**The token burst fits in the headroom's slack.** A bucket of capacity ``C`` refilling
at ``r`` admits at most ``C + r * w`` in any window of ``w`` seconds. Providers count
tokens per minute over a sliding (or fixed) 60 s window, and the bucket refills at
``tpm * headroom`` a minute, so a minute admits at most ``C + tpm * headroom``. The
capacity is therefore ``tpm * min(TOKEN_BURST_SECONDS / 60, 1 - headroom)``: a full
bucket plus a minute of refill never exceeds ``tpm``. (It used to be 10 s of budget,
so a provider's first minute saw 1/6 + 0.97 = 1.14 times its limit, drew 429s and
slowed the adaptive pace.) With ``headroom=1.0`` there is no slack and the capacity
is 0: each request, the first one too, waits until the budget has refilled its own
tokens; that is what "use exactly the limit" takes. The request bucket is left alone:
its capacity is ``burst`` requests (1 by default), within the slack from about 33 RPM up.

**Giving back.** A request's tokens are estimated when it reserves and corrected when
its usage is known (:meth:`RefillingBucket.give_back`). The over-estimate never reached
the provider, so the debt it created may be cancelled, but only the part of it that is
still owed: the bucket must end where it would be had the estimate been exact. Those
two differ by the over-estimate only until a refill would have filled the exact bucket
past its capacity: each refill since the request began cuts what may come back to
the room (capacity minus level) left after it, and a refill that reaches the capacity
means the debt was repaid in full. Returning more (capping only at the capacity, as
this did before) lets tokens already refilled come back a second time, and several
late corrections then admit several bucketfuls at once. A bucket therefore records the
room after each refill (:meth:`RefillingBucket.mark` names a point in that record) and
gives back at most the least room since the request's mark. Forgetting reservations
forgives all debt, so nothing reserved before can come back after it.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Protocol

from langchain_batchkit._limit_settings import RateLimitSettings

__all__ = ["TOKEN_BURST_SECONDS", "Bucket", "RefillingBucket", "make_buckets"]

#: The most token budget that may be spent at once, in seconds of it; never more than the
#: headroom's slack (requests are evenly spaced instead).
TOKEN_BURST_SECONDS = 10.0
#: The most refills a bucket remembers the room after (older ones merge, conservatively).
_MAX_FLOORS = 1024


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

    def mark(self) -> int:
        """A point in this bucket's history, for :meth:`give_back` (taken as a request starts)."""
        ...

    def give_back(self, amount: float, since: int | None = None) -> None:
        """Return ``amount`` (negative: charge more) once a request's real cost is known;
        ``since`` is the request's :meth:`mark` (``None``: now)."""
        ...

    def seconds_for(self, amount: float) -> float:
        """Seconds of this budget ``amount`` uses up at the configured rate (0: none)."""
        ...


class RefillingBucket:
    """A token bucket that hands out reservations: it may go into debt, and the
    debt is the wait of whoever reserves next.

    ``factor`` (the adaptive pace) scales the refill rate of each call. The bucket
    also remembers the room left after each refill, as a stack of ``(refill number,
    room)`` with the room rising from bottom to top, so the least room since any
    mark is one bisection away (see the module docstring for why).

    Example:
        >>> bucket = RefillingBucket(per_minute=600, capacity=20, now=0.0)
        >>> bucket.reserve(100, now=0.0, factor=1.0, not_before=0.0)  # 80 in debt
        8.0
        >>> since = bucket.mark()
        >>> bucket.give_back(70, since)  # it used 30: 10 in debt
        >>> bucket.reserve(0, now=5.0, factor=1.0, not_before=0.0)  # refills to 20
        0.0
        >>> bucket.give_back(10, since)  # too late: the refill already repaid it
        >>> bucket.level
        20
    """

    __slots__ = ("_floors", "_refills", "capacity", "last", "level", "rate")

    def __init__(self, per_minute: float, capacity: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = capacity
        self.level = capacity
        self.last = now
        self._refills = 0
        self._floors: list[tuple[int, float]] = []

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
            self._record_room(self.capacity - self.level)
        self.level -= amount
        return (start - now) + (0.0 if self.level >= 0 else -self.level / rate)

    def can_take(self, amount: float, now: float, factor: float) -> bool:
        """Whether ``amount`` is there now."""
        level = min(self.capacity, self.level + (now - self.last) * self.rate * factor)
        return level >= amount

    def forget_reservations(self) -> None:
        """Drop the debt of reservations not used yet: their holders reserve again."""
        if self.level < 0:
            self.level = 0.0
            self._record_room(0.0)  # debt forgiven: nothing before comes back

    def mark(self) -> int:
        """The number of the next refill: what is given back ``since`` it is capped by
        the room left after that refill and every later one."""
        return self._refills

    def give_back(self, amount: float, since: int | None = None) -> None:
        """Return ``amount`` unused, at most the least room after a refill ``since`` the
        mark (never above capacity); a negative ``amount`` charges more, in full."""
        if amount > 0 and since is not None:
            i = bisect_left(self._floors, since, key=lambda floor: floor[0])
            if i < len(self._floors):
                amount = min(amount, self._floors[i][1])
        self.level = min(self.capacity, self.level + amount)

    def seconds_for(self, amount: float) -> float:
        """Seconds of refill ``amount`` takes at the configured rate."""
        return amount / self.rate

    def _record_room(self, room: float) -> None:
        floors = self._floors
        while floors and floors[-1][1] >= room:
            floors.pop()
        floors.append((self._refills, room))
        self._refills += 1
        if len(floors) > _MAX_FLOORS:  # merge the two oldest, keeping the lesser room
            oldest = floors.pop(0)
            floors[0] = (floors[0][0], oldest[1])


def make_buckets(settings: RateLimitSettings, now: float) -> dict[str, Bucket]:
    """The buckets ``settings`` asks for, by kind (``"requests"``, ``"tokens"``)."""
    buckets: dict[str, Bucket] = {}
    if settings.requests_per_minute is not None:
        rpm = settings.requests_per_minute
        buckets["requests"] = RefillingBucket(rpm * settings.headroom, settings.burst, now)
    if settings.tokens_per_minute is not None:
        tpm = settings.tokens_per_minute
        burst = tpm * min(TOKEN_BURST_SECONDS / 60.0, 1.0 - settings.headroom)
        buckets["tokens"] = RefillingBucket(tpm * settings.headroom, burst, now)
    return buckets
