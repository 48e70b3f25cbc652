"""Sizing helpers from the course tables: presets, Little's law, a token estimate.

``batchkit(max_concurrency="auto")`` uses these for you; import them when you
want to size a run yourself.

Example:
    >>> from langchain_batchkit.sizing import concurrency_for_rate_limit
    >>> concurrency_for_rate_limit(60, item_latency=30, calls_per_item=3).concurrency
    10
"""

from langchain_batchkit._concurrency import (
    PRESETS,
    ConcurrencyPlan,
    ConcurrencyPreset,
    concurrency_for_rate_limit,
    concurrency_for_size,
)
from langchain_batchkit._limits import estimate_tokens

__all__ = [
    "PRESETS",
    "ConcurrencyPlan",
    "ConcurrencyPreset",
    "concurrency_for_rate_limit",
    "concurrency_for_size",
    "estimate_tokens",
]
