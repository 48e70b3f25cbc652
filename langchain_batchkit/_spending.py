"""The money bucket: a spending cap that never refills and refuses instead of waiting.

The rate buckets (:mod:`~langchain_batchkit._buckets`) answer "wait this long";
a spending cap answers "yes" or "no": a call's worst case is reserved if it fits
under the cap with everything spent and reserved so far, else refused. When the
call ends, its reservation becomes what it really cost. Arithmetic only: no
lock, no clock. :class:`~langchain_batchkit.Budget` holds one under a lock in
this process; :class:`~langchain_batchkit._reservations.Reservations` carries one
for a Ray cluster, so every worker draws from the same cap.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BudgetStats", "SpendingCap"]

#: Float rounding forgiven when comparing with the cap (a millionth of a cent).
_ROUNDING = 1e-8


@dataclass(frozen=True, slots=True)
class BudgetStats:
    """A snapshot of a :class:`~langchain_batchkit.Budget`.

    Attributes:
        usd: the cap.
        spent: dollars of calls that ended (and of resumed checkpoints).
        reserved: worst cases of calls in flight.
        refused: calls refused because they would pass the cap.
        calls: calls let through.
        overshoot: the most ``spent`` ever went over ``usd`` (0 unless a call
            outgrew its worst case).
    """

    usd: float
    spent: float
    reserved: float
    refused: int
    calls: int
    overshoot: float

    @property
    def left(self) -> float:
        """Dollars neither spent nor reserved."""
        return self.usd - self.spent - self.reserved


class SpendingCap:
    """At most ``usd`` dollars: reserve worst cases, settle at real costs, refuse past it.

    Example:
        >>> cap = SpendingCap(1.0)
        >>> cap.reserve(0.6), cap.reserve(0.6)
        (True, False)
        >>> cap.settle(0.6, 0.25); round(cap.stats().left, 2)
        0.75
    """

    __slots__ = ("_calls", "_counted", "_over", "_refused", "_reserved", "_spent", "usd")

    def __init__(self, usd: float, spent: float = 0.0) -> None:
        self.usd = float(usd)
        self._spent = float(spent)
        self._reserved = 0.0
        self._refused = self._calls = 0
        self._over = 0.0
        self._counted: dict[str, float] = {}  # checkpoint -> its stored cost, in spent

    def __repr__(self) -> str:
        return f"SpendingCap(usd={self.usd:g}, spent={self._spent:g}, reserved={self._reserved:g})"

    def reserve(self, usd: float) -> bool:
        """Reserve a call's worst case; ``False`` (nothing reserved) if it would pass the cap."""
        if self._spent + self._reserved + usd > self.usd + _ROUNDING:
            self._refused += 1
            return False
        self._reserved += usd
        self._calls += 1
        return True

    def settle(self, reserved: float, cost: float | None) -> None:
        """A call ended: its reservation becomes its cost (``None``: the reservation stands)."""
        self._reserved = max(0.0, self._reserved - reserved)
        self._spent += reserved if cost is None else cost
        self._over = max(self._over, self._spent - self.usd)

    def release(self, reserved: float) -> None:
        """A call failed unanswered (not billed): its reservation is given back."""
        self._reserved = max(0.0, self._reserved - reserved)

    def add_spent(self, usd: float) -> None:
        """Count dollars spent elsewhere."""
        self._spent += usd

    def resumed(self, checkpoint: str, stored: float) -> None:
        """A run resumes from ``checkpoint`` holding ``stored`` dollars of finished items:
        count what this cap has not counted yet (all of it, for a new cap)."""
        counted = self._counted.get(checkpoint, 0.0)
        if stored > counted:
            self._spent += stored - counted
        self._counted[checkpoint] = max(stored, counted)

    def recorded(self, checkpoint: str, cost: float | None) -> None:
        """An item this cap paid for was stored in ``checkpoint`` (so it is counted once)."""
        if cost:
            self._counted[checkpoint] = self._counted.get(checkpoint, 0.0) + cost

    def exhausted(self) -> bool:
        """Was a call refused? (Then the runs drawing from it start no new item.)"""
        return self._refused > 0

    def stats(self) -> BudgetStats:
        """A snapshot of the numbers."""
        return BudgetStats(
            self.usd, self._spent, self._reserved, self._refused, self._calls, max(0.0, self._over)
        )
