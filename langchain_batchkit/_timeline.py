"""A run's timeline in fixed-size bins: bounded memory, whatever the number of items.

The window tells a :class:`Timeline` when each attempt starts and ends (with the
items in flight and the window's cap at that moment); the timeline adds the event
to the bin of its time. There are never more than ``max_bins`` bins: when the run
outgrows them, the bin width doubles and neighbouring bins merge, so a run over
millions of items keeps a few hundred rows, coarser the longer it ran. Latencies go
to a fixed log-scale histogram and error types to a small counter, so quantiles and
failure counts need no per-item rows either.

Times are read from the run's clock (a fake one in tests), as seconds since the
run opened.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, overload

from langchain_batchkit._timeline_bin import TimelineBin
from langchain_batchkit._timeline_latency import (
    N_BUCKETS,
    bucket_of,
    histogram_of,
    quantile_of,
)

if TYPE_CHECKING:
    from langchain_batchkit._results import ItemResult

__all__ = ["Timeline", "TimelineBin"]

#: The first bin width, in seconds (a power of two, so merged widths stay exact).
FIRST_WIDTH = 1 / 64
#: The most bins a timeline keeps (even: pairs merge).
MAX_BINS = 240
#: The most distinct error types counted by name; the rest count as ``"other"``.
MAX_ERROR_TYPES = 24


class _Total:
    """A read-only total of one per-bin column of a :class:`Timeline`."""

    def __init__(self, column: str, doc: str) -> None:
        self._column = column
        self.__doc__ = doc

    @overload
    def __get__(self, timeline: None, owner: type[Any]) -> _Total: ...
    @overload
    def __get__(self, timeline: Timeline, owner: type[Any]) -> int: ...
    def __get__(self, timeline: Timeline | None, owner: type[Any]) -> _Total | int:
        if timeline is None:
            return self
        column: list[int] = getattr(timeline, self._column)
        return sum(column)


class Timeline:
    """What a run did over time, binned; attached to results as ``.timeline``.

    Built by the engine; read it with :meth:`bins`, :meth:`latency_quantile` and
    the totals, or draw it with ``results.plot()``.

    Args:
        t0: the clock time the run opened.
        cap: the window's cap at the start.
        max_bins: the most bins kept (an even number >= 2).
        limiter_stats: a function returning the rate limiter's stats, sampled once
            per new bin for its pauses (``None`` without a limiter).

    Example:
        >>> tl = Timeline(0.0, cap=4)
        >>> tl.started(0.0, 1)
        >>> tl.retried(0.5, 0, cap=4, rate_limited=True)
        >>> tl.close(1.0)
        >>> tl.attempts, tl.retries, tl.rate_limited, len(tl.bins()) <= MAX_BINS
        (1, 1, 1, True)
    """

    __slots__ = (
        "_busy",
        "_cap",
        "_caps",
        "_failed",
        "_idle",
        "_last",
        "_level",
        "_limiter_pauses",
        "_limiter_stats",
        "_ok",
        "_pauses",
        "_peak",
        "_rate_limited",
        "_retries",
        "_started",
        "_tokens",
        "end",
        "errors",
        "first_cap",
        "latency_counts",
        "max_bins",
        "resumed",
        "t0",
        "width",
    )

    def __init__(
        self,
        t0: float,
        *,
        cap: int,
        max_bins: int = MAX_BINS,
        limiter_stats: Callable[[], Any] | None = None,
    ) -> None:
        if max_bins < 2 or max_bins % 2:
            raise ValueError(f"max_bins must be an even number >= 2, got {max_bins!r}")
        self.t0 = t0
        self.end = t0
        self.width = FIRST_WIDTH
        self.max_bins = max_bins
        self.first_cap = cap
        self._cap = cap
        self._level = 0
        self._last = t0
        self._started: list[int] = []
        self._ok: list[int] = []
        self._failed: list[int] = []
        self._retries: list[int] = []
        self._rate_limited: list[int] = []
        self._pauses: list[int] = []
        self._tokens: list[int] = []
        self._busy: list[float] = []
        self._idle: list[float] = []
        self._peak: list[int] = []
        self._caps: list[int] = []
        #: Finished items per latency bucket (see :meth:`latency_histogram`).
        self.latency_counts = [0] * N_BUCKETS
        #: Failed items per error type name.
        self.errors: dict[str, int] = {}
        #: Items a checkpoint returned without running them.
        self.resumed = 0
        self._limiter_stats = limiter_stats
        self._limiter_pauses = self._sample_pauses() if limiter_stats is not None else 0

    # -- recording (the window calls these; no I/O, no allocation per event) ---------------

    def started(self, now: float, in_flight: int) -> None:
        """An attempt started; ``in_flight`` counts it."""
        i = self._advance(now)
        self._started[i] += 1
        self._level = in_flight
        if in_flight > self._peak[i]:
            self._peak[i] = in_flight

    def retried(self, now: float, in_flight: int, *, cap: int, rate_limited: bool) -> None:
        """An attempt failed and its item will retry (a 429 when ``rate_limited``)."""
        i = self._advance(now)
        self._retries[i] += 1
        if rate_limited:
            self._rate_limited[i] += 1
        self._level = in_flight
        self._set_cap(i, cap)

    def finished(
        self,
        now: float,
        in_flight: int,
        result: ItemResult[Any, Any],
        *,
        cap: int,
        rate_limited: bool = False,
    ) -> None:
        """An item's last attempt ended with ``result``."""
        i = self._advance(now)
        if result.error is None:
            self._ok[i] += 1
        else:
            self._failed[i] += 1
            if rate_limited:
                self._rate_limited[i] += 1
        usage = result.usage
        if usage is not None:
            self._tokens[i] += usage.total_tokens
        self._tally(result)
        self._level = in_flight
        self._set_cap(i, cap)

    def _tally(self, result: ItemResult[Any, Any]) -> None:
        """Count a finished item's latency and error type (no time axis needed)."""
        error = result.error
        if error is not None:
            name = error.type
            if name not in self.errors and len(self.errors) >= MAX_ERROR_TYPES:
                name = "other"
            self.errors[name] = self.errors.get(name, 0) + 1
        self.latency_counts[bucket_of(result.latency)] += 1

    def close(self, now: float) -> None:
        """The run ended: account the time up to ``now``."""
        self._advance(now)
        self.end = max(self.end, now)
        if self._limiter_stats is not None and self._pauses:
            self._pauses[-1] += self._sample_pauses() - self._limiter_pauses
            self._limiter_stats = None  # a finished timeline holds no reference to the limiter

    def _set_cap(self, i: int, cap: int) -> None:
        self._cap = cap
        if cap < self._caps[i]:
            self._caps[i] = cap

    def _advance(self, now: float) -> int:
        """Make room for ``now``, account ``[last, now]`` at the current level, return its bin."""
        i = int((now - self.t0) / self.width) if now > self.t0 else 0
        if i >= len(self._started):
            i = self._grow(i, now)
        last = self._last
        if now <= last:
            return i
        level = self._level
        j = int((last - self.t0) / self.width) if last > self.t0 else 0
        while j < i:  # the interval crosses bin edges
            edge = self.t0 + (j + 1) * self.width
            self._busy[j] += level * (edge - last)
            if not level:
                self._idle[j] += edge - last
            last = edge
            j += 1
        self._busy[i] += level * (now - last)
        if not level:
            self._idle[i] += now - last
        self._last = now
        return i

    def _grow(self, i: int, now: float) -> int:
        while i >= self.max_bins:
            self._coarsen()
            i = int((now - self.t0) / self.width)
        if self._limiter_stats is not None and self._pauses:
            pauses = self._sample_pauses()
            self._pauses[-1] += pauses - self._limiter_pauses
            self._limiter_pauses = pauses
        extra = i + 1 - len(self._started)
        level, cap = self._level, self._cap
        for column in self._counters():
            column.extend([0] * extra)
        self._busy.extend([0.0] * extra)
        self._idle.extend([0.0] * extra)
        self._peak.extend([level] * extra)
        self._caps.extend([cap] * extra)
        return i

    def _coarsen(self) -> None:
        """Double the bin width: each pair of bins becomes one."""

        def pairs(column: list[Any], merge: Callable[[Any, Any], Any]) -> list[Any]:
            merged = [merge(column[k], column[k + 1]) for k in range(0, len(column) - 1, 2)]
            if len(column) % 2:
                merged.append(column[-1])
            return merged

        additive: tuple[list[Any], ...] = (*self._counters(), self._busy, self._idle)
        for column in additive:
            column[:] = pairs(column, _add)
        self._peak[:] = pairs(self._peak, max)
        self._caps[:] = pairs(self._caps, min)
        self.width *= 2

    def _counters(self) -> tuple[list[int], ...]:
        return (
            self._started,
            self._ok,
            self._failed,
            self._retries,
            self._rate_limited,
            self._pauses,
            self._tokens,
        )

    def _sample_pauses(self) -> int:
        assert self._limiter_stats is not None
        try:
            return int(self._limiter_stats().pauses)
        except Exception:  # a limiter without stats: no pauses to show
            self._limiter_stats = None
            return 0

    # -- reading ---------------------------------------------------------------------------

    @property
    def duration(self) -> float:
        """Seconds from the run's opening to its close."""
        return self.end - self.t0

    @property
    def n_bins(self) -> int:
        """How many bins the timeline holds (at most ``max_bins``)."""
        return len(self._started)

    attempts = _Total("_started", "Attempts started (first attempts and retries).")
    succeeded = _Total("_ok", "Items that finished ok.")
    failed = _Total("_failed", "Items that finished with an error.")
    retries = _Total("_retries", "Failed attempts that were scheduled to retry.")
    rate_limited = _Total("_rate_limited", "Attempts that ended in a rate-limit error (429).")
    pauses = _Total("_pauses", "Rate-limiter pauses that began.")
    tokens = _Total("_tokens", "Tokens of the items that finished.")

    def bins(self) -> list[TimelineBin]:
        """Every bin, oldest first."""
        w = self.width
        return [
            TimelineBin(
                start=k * w,
                width=w,
                started=self._started[k],
                succeeded=self._ok[k],
                failed=self._failed[k],
                retries=self._retries[k],
                rate_limited=self._rate_limited[k],
                pauses=self._pauses[k],
                tokens=self._tokens[k],
                mean_in_flight=self._busy[k] / w,
                peak_in_flight=self._peak[k],
                cap=self._caps[k],
                idle=self._idle[k],
            )
            for k in range(len(self._started))
        ]

    def latency_histogram(self) -> list[tuple[float, float, int]]:
        """``(low, high, count)`` per non-empty latency bucket, in seconds."""
        return histogram_of(self.latency_counts)

    def latency_quantile(self, q: float) -> float | None:
        """The ``q`` quantile of item latency (0.5: the median), interpolated within
        its log-scale bucket (so within 12%); ``None`` when no item finished."""
        return quantile_of(self.latency_counts, q)

    def then(self, other: Timeline) -> Timeline:
        """This run followed by ``other`` (a ``retry_failed()`` run), back to back."""
        joined = Timeline(self.t0, cap=self.first_cap, max_bins=self.max_bins)
        for source, shift in ((self, 0.0), (other, self.duration)):
            joined._absorb(source, shift)
        joined.end = joined.t0 + self.duration + other.duration
        joined.latency_counts = [
            a + b for a, b in zip(self.latency_counts, other.latency_counts, strict=True)
        ]
        for name, n in (*self.errors.items(), *other.errors.items()):
            joined.errors[name] = joined.errors.get(name, 0) + n
        joined.resumed = self.resumed + other.resumed
        return joined

    def _absorb(self, source: Timeline, shift: float) -> None:
        self._last = math.inf  # no integration: busy and idle are copied as they are
        for b in source.bins():
            i = self._advance(self.t0 + shift + b.start)
            for mine, theirs in zip(
                self._counters(),
                (b.started, b.succeeded, b.failed, b.retries, b.rate_limited, b.pauses, b.tokens),
                strict=True,
            ):
                mine[i] += theirs
            self._busy[i] += b.mean_in_flight * b.width
            self._idle[i] += b.idle
            self._peak[i] = max(self._peak[i], b.peak_in_flight)
            self._caps[i] = min(self._caps[i], b.cap)
            self._level, self._cap = 0, b.cap

    @classmethod
    def from_results(cls, results: Sequence[ItemResult[Any, Any]]) -> Timeline:
        """A timeline with no time axis, from finished results alone (latencies and
        errors): what a BatchResult built by hand, or unpickled from an older
        version, can still show."""
        timeline = cls(0.0, cap=1)
        for result in results:
            timeline._tally(result)
        return timeline

    def __repr__(self) -> str:
        return (
            f"Timeline({self.duration:.2f} s in {self.n_bins} bins of {self.width:g} s: "
            f"{self.succeeded} ok, {self.failed} failed, {self.retries} retries, "
            f"{self.rate_limited} rate-limited)"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self.__slots__}
        state["_limiter_stats"] = None  # never pickle the limiter
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def _add(a: Any, b: Any) -> Any:
    return a + b
