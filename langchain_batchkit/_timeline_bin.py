"""One bin of a run's :class:`~langchain_batchkit._timeline.Timeline`, as a value."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TimelineBin"]


@dataclass(frozen=True, slots=True)
class TimelineBin:
    """One bin of a :class:`Timeline`: what happened in ``[start, start + width)``.

    Attributes:
        start: seconds since the run opened.
        width: the bin's width in seconds.
        started: attempts started (first attempts and retries).
        succeeded: items that finished ok.
        failed: items that finished with an error.
        retries: failed attempts that were scheduled to retry.
        rate_limited: attempts that ended in a rate-limit error (429).
        pauses: rate-limiter pauses that began (only with a ``RateLimit``).
        tokens: tokens of the items that finished.
        mean_in_flight: average attempts in flight over the bin.
        peak_in_flight: the most attempts in flight at once.
        cap: the lowest the window's cap (items allowed in flight) was.
        idle: seconds with nothing in flight (waiting out backoff, or reading input).
    """

    start: float
    width: float
    started: int
    succeeded: int
    failed: int
    retries: int
    rate_limited: int
    pauses: int
    tokens: int
    mean_in_flight: float
    peak_in_flight: int
    cap: int
    idle: float
