"""langchain-batchkit: run any LangChain Runnable safely and fast over many inputs.

Example:
    >>> from langchain_batchkit import batchkit        # doctest: +SKIP
    >>> results = batchkit(chain).batch(inputs)        # doctest: +SKIP
    >>> results.failed, results.summary()              # doctest: +SKIP
"""

from langchain_batchkit._batch_api import (
    BatchAPIError,
    BatchAPIOptions,
    BatchAPIRunner,
    BatchJobUnfinishedError,
    BatchRequestError,
    BatchStateError,
)
from langchain_batchkit._checkpoint import Checkpoint, CheckpointError
from langchain_batchkit._concurrency import (
    PRESETS,
    ConcurrencyPlan,
    ConcurrencyPreset,
    concurrency_for_rate_limit,
    concurrency_for_size,
)
from langchain_batchkit._drivers import InputSourceError
from langchain_batchkit._errors import BatchFailedError, BatchkitError, ConfigurationError
from langchain_batchkit._limits import LimiterStats, RateLimit, estimate_tokens
from langchain_batchkit._microbatch import (
    BatcherStoppedError,
    BatchOutputMismatchError,
    MicroBatcher,
)
from langchain_batchkit._progress import ProgressEvent, RootRunCounter
from langchain_batchkit._results import (
    BatchResult,
    BatchSummary,
    ItemError,
    ItemResult,
    RunReport,
    TokenUsage,
)
from langchain_batchkit._retry import RetryPolicy
from langchain_batchkit._runner import INDEX_METADATA_KEY, BatchKit, batchkit

__version__ = "0.1.0"

__all__ = [
    "INDEX_METADATA_KEY",
    "PRESETS",
    "BatchAPIError",
    "BatchAPIOptions",
    "BatchAPIRunner",
    "BatchFailedError",
    "BatchJobUnfinishedError",
    "BatchKit",
    "BatchOutputMismatchError",
    "BatchRequestError",
    "BatchResult",
    "BatchStateError",
    "BatchSummary",
    "BatcherStoppedError",
    "BatchkitError",
    "Checkpoint",
    "CheckpointError",
    "ConcurrencyPlan",
    "ConcurrencyPreset",
    "ConfigurationError",
    "InputSourceError",
    "ItemError",
    "ItemResult",
    "LimiterStats",
    "MicroBatcher",
    "ProgressEvent",
    "RateLimit",
    "RetryPolicy",
    "RootRunCounter",
    "RunReport",
    "TokenUsage",
    "__version__",
    "batchkit",
    "concurrency_for_rate_limit",
    "concurrency_for_size",
    "estimate_tokens",
]
