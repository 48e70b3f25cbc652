"""Item latencies in a fixed log-scale histogram: quantiles without per-item rows.

Bucket 0 holds latencies up to ``LATENCY_FLOOR``; then ``BUCKETS_PER_DECADE``
buckets per decade for ``LATENCY_DECADES`` decades; the last bucket holds the rest.
A run keeps one list of ``N_BUCKETS`` counts, whatever its number of items.

Example:
    >>> counts = [0] * N_BUCKETS
    >>> for seconds in (0.2, 0.2, 0.3, 1.5):
    ...     counts[bucket_of(seconds)] += 1
    >>> round(quantile_of(counts, 0.5), 1)  # within the bucket: 0.2 to 0.22
    0.2
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "BUCKETS_PER_DECADE",
    "LATENCY_DECADES",
    "LATENCY_FLOOR",
    "N_BUCKETS",
    "bucket_edges",
    "bucket_of",
    "histogram_of",
    "quantile_of",
]

#: Log-scale buckets per decade, from ``LATENCY_FLOOR`` seconds.
BUCKETS_PER_DECADE = 20
LATENCY_FLOOR = 1e-4
LATENCY_DECADES = 8  # 0.1 ms .. 10,000 s; bucket 0 is "below", the last "above"
N_BUCKETS = BUCKETS_PER_DECADE * LATENCY_DECADES + 2
_LOG_FLOOR = math.log10(LATENCY_FLOOR)


def bucket_of(latency: float) -> int:
    """The bucket that counts ``latency`` seconds."""
    if latency <= LATENCY_FLOOR:
        return 0
    offset = (math.log10(latency) - _LOG_FLOOR) * BUCKETS_PER_DECADE
    return min(N_BUCKETS - 1, 1 + int(offset))


def bucket_edges(b: int) -> tuple[float, float]:
    """``(low, high)`` seconds of bucket ``b`` (the last one is open: ``high`` is inf)."""
    if b == 0:
        return 0.0, LATENCY_FLOOR
    low = 10 ** (_LOG_FLOOR + (b - 1) / BUCKETS_PER_DECADE)
    if b == N_BUCKETS - 1:
        return low, math.inf
    return low, 10 ** (_LOG_FLOOR + b / BUCKETS_PER_DECADE)


def histogram_of(counts: Sequence[int]) -> list[tuple[float, float, int]]:
    """``(low, high, count)`` per non-empty bucket, in seconds."""
    return [(*bucket_edges(b), n) for b, n in enumerate(counts) if n]


def quantile_of(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0.5: the median), interpolated within its log-scale bucket
    (so within 12%); ``None`` when nothing was counted."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for b, n in enumerate(counts):
        if n and seen + n >= rank:
            low, high = bucket_edges(b)
            if b == 0:
                return low
            if math.isinf(high):
                return low
            fraction = (rank - seen) / n
            return float(low * (high / low) ** fraction)
        seen += n
    return None  # pragma: no cover - rank <= total always lands
