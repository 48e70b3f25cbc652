"""Run batchkit on Ray: many workers, one rate limit, one row per input.

Install with ``pip install 'langchain-batchkit[ray]'``. Ray is imported only when
something here is used.

* :func:`run_on_ray` runs a chain over a list or a Ray ``Dataset`` on a pool of
  actors and returns a materialised Dataset of result rows, or writes them to one
  JSON Lines / Parquet file, with one progress bar over every item.
* :class:`BatchKitMapper` is the callable class behind it, for your own
  ``Dataset.map_batches`` pipelines.
* :class:`ClusterRateLimit` keeps one requests/tokens-per-minute budget in one
  actor that every worker reserves from, so N workers together stay under the
  provider's limit.

Example:
    >>> from langchain_batchkit.ray import ClusterRateLimit, run_on_ray   # doctest: +SKIP
    >>> limit = ClusterRateLimit(requests_per_minute=500, max_in_flight=16)  # doctest: +SKIP
    >>> rows = run_on_ray(make_chain, prompts, concurrency=4, rate_limit=limit)  # doctest: +SKIP
"""

from langchain_batchkit._deprecation import deprecated_names as _deprecated_names
from langchain_batchkit._limit_stats import LimiterStats as _LimiterStats
from langchain_batchkit.ray._limiter import ClusterRateLimit
from langchain_batchkit.ray._mapper import BatchKitMapper
from langchain_batchkit.ray._rows import RESULT_COLUMNS
from langchain_batchkit.ray._run import run_on_ray

__all__ = [
    "RESULT_COLUMNS",
    "BatchKitMapper",
    "ClusterRateLimit",
    "run_on_ray",
]


__getattr__ = _deprecated_names(
    __name__, renamed={"BatchkitMapper": BatchKitMapper, "ClusterLimiterStats": _LimiterStats}
)
