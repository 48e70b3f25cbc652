"""What a rate limit has done so far, as one value (the same for a cluster's shared budget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LimiterStats"]


@dataclass(frozen=True, slots=True)
class LimiterStats:
    """What a :class:`RateLimit` (or a cluster's shared budget) has done so far.

    A :class:`~langchain_batchkit.ray.ClusterRateLimit`'s ``stats()`` counts every
    worker together; it has no in-flight cap (each worker caps its own), so
    ``in_flight_cap`` is ``inf`` there.

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
        tokens_given_back: net tokens returned after responses reported their usage
            (estimate minus usage, summed; negative when requests used more).
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
    tokens_given_back: int = 0

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
