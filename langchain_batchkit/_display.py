"""Readable renderings of small value objects: a sentence for ``str``, a table for HTML.

Example:
    >>> from langchain_batchkit import LimiterStats
    >>> print(limiter_stats_text(LimiterStats(120, 30, 12.5, 2, 1, 0, 8, float("inf"), 6.0)))
    120 requests, 30 waited (0.42 s each, 12.5 s summed); 2 rate-limited (429), 1 pause; 0 in flight (at most 8), no cap now (lowest 6)
"""  # noqa: E501

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from langchain_batchkit._limits import LimiterStats

__all__ = ["limiter_stats_html", "limiter_stats_text"]


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _cap(value: float) -> str:
    return "none" if math.isinf(value) else f"{value:g}"


def limiter_stats_text(stats: LimiterStats) -> str:
    """One line saying what a :class:`RateLimit` did: requests, waits, pushback, caps.

    Meant as ``LimiterStats.__str__`` (``print(limit.stats())``).
    """
    each = stats.wait_seconds / stats.waited if stats.waited else 0.0
    waited = (
        f"{stats.waited:,} waited ({each:.2g} s each, {stats.wait_seconds:.3g} s summed)"
        if stats.waited
        else "none waited"
    )
    cap = "no cap now" if math.isinf(stats.in_flight_cap) else f"cap {stats.in_flight_cap:g}"
    lowest = (
        f" (lowest {_cap(stats.lowest_in_flight_cap)})"
        if stats.lowest_in_flight_cap != stats.in_flight_cap
        else ""
    )
    return (
        f"{_plural(stats.requests, 'request')}, {waited}; "
        f"{stats.rate_limited:,} rate-limited (429), {_plural(stats.pauses, 'pause')}"
        f"{_paused(stats)}; "
        f"{stats.in_flight:,} in flight (at most {stats.max_in_flight:,}), {cap}{lowest}"
    )


def _paused(stats: LimiterStats) -> str:
    seconds = getattr(stats, "paused_seconds", 0.0)
    return f" ({seconds:.3g} s of wall time paused)" if stats.pauses and seconds else ""


def limiter_stats_html(stats: LimiterStats) -> str:
    """A small two-column table of the same numbers, for ``LimiterStats._repr_html_``."""
    each = stats.wait_seconds / stats.waited if stats.waited else 0.0
    rows = (
        ("requests let through", f"{stats.requests:,}"),
        ("requests that waited", f"{stats.waited:,}"),
        ("seconds waited", f"{stats.wait_seconds:.3g} summed over requests, {each:.2g} each"),
        ("wall time paused", f"{getattr(stats, 'paused_seconds', 0.0):.3g} s"),
        ("429s seen", f"{stats.rate_limited:,}"),
        ("pauses", f"{stats.pauses:,}"),
        ("in flight", f"{stats.in_flight:,} now, {stats.max_in_flight:,} at most"),
        (
            "cap on in flight",
            f"{_cap(stats.in_flight_cap)} now, {_cap(stats.lowest_in_flight_cap)} at lowest",
        ),
    )
    body = "".join(
        f"<tr><td style='text-align:left'>{html.escape(name)}</td>"
        f"<td style='text-align:right'>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    return f"<table><caption>RateLimit stats</caption><tbody>{body}</tbody></table>"
