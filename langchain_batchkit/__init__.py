"""langchain-batchkit: run any LangChain Runnable safely and fast over many inputs.

Example:
    >>> from langchain_batchkit import batchkit        # doctest: +SKIP
    >>> results = batchkit(chain).batch(inputs)        # doctest: +SKIP
    >>> results.failed, results.summary()              # doctest: +SKIP

The course-table sizing helpers live in :mod:`langchain_batchkit.sizing`, the
whole exception tree in :mod:`langchain_batchkit.errors`, prices and estimates in
:mod:`langchain_batchkit.costs`, the embeddings types in :mod:`langchain_batchkit.embeddings`.
"""

from langchain_batchkit._batch_api import BatchAPIOptions, BatchAPIRunner
from langchain_batchkit._budget import Budget
from langchain_batchkit._checkpoint import Checkpoint
from langchain_batchkit._clock import Clock
from langchain_batchkit._deprecation import deprecated_names as _deprecated_names
from langchain_batchkit._embed import aembed_texts, embed_texts
from langchain_batchkit._embed_paced import paced_embeddings
from langchain_batchkit._errors import (
    BatchFailedError,
    BatchKitError,
    CheckpointError,
    ConfigurationError,
    EventLoopMismatchError,
    InputSourceError,
)
from langchain_batchkit._limit_settings import RateLimitSettings
from langchain_batchkit._limits import LimiterStats, RateLimit
from langchain_batchkit._microbatch import MicroBatcher
from langchain_batchkit._options import KitOptions
from langchain_batchkit._prices import Price
from langchain_batchkit._progress import ProgressEvent, RootRunCounter
from langchain_batchkit._reask import Reask
from langchain_batchkit._results import (
    Attempt,
    BatchResult,
    BatchSummary,
    ItemError,
    ItemResult,
    RunReport,
    TokenUsage,
)
from langchain_batchkit._retry import RetryPolicy
from langchain_batchkit._runner import INDEX_METADATA_KEY, BatchKit, batchkit

__version__ = "0.4.0"

__all__ = [
    "INDEX_METADATA_KEY",
    "Attempt",
    "BatchAPIOptions",
    "BatchAPIRunner",
    "BatchFailedError",
    "BatchKit",
    "BatchKitError",
    "BatchResult",
    "BatchSummary",
    "Budget",
    "Checkpoint",
    "CheckpointError",
    "Clock",
    "ConfigurationError",
    "EventLoopMismatchError",
    "InputSourceError",
    "ItemError",
    "ItemResult",
    "KitOptions",
    "LimiterStats",
    "MicroBatcher",
    "Price",
    "ProgressEvent",
    "RateLimit",
    "RateLimitSettings",
    "Reask",
    "RetryPolicy",
    "RootRunCounter",
    "RunReport",
    "TokenUsage",
    "__version__",
    "aembed_texts",
    "batchkit",
    "embed_texts",
    "paced_embeddings",
]

#: Names that moved in 0.2.0, importable from here (with a DeprecationWarning) for one release.
_MOVED = {
    "PRESETS": "langchain_batchkit.sizing",
    "ConcurrencyPlan": "langchain_batchkit.sizing",
    "ConcurrencyPreset": "langchain_batchkit.sizing",
    "concurrency_for_rate_limit": "langchain_batchkit.sizing",
    "concurrency_for_size": "langchain_batchkit.sizing",
    "estimate_tokens": "langchain_batchkit.sizing",
    "BatchAPIError": "langchain_batchkit.errors",
    "BatchJobUnfinishedError": "langchain_batchkit.errors",
    "BatchRequestError": "langchain_batchkit.errors",
    "BatchStateError": "langchain_batchkit.errors",
    "BatcherStoppedError": "langchain_batchkit.errors",
    "BatchOutputMismatchError": "langchain_batchkit.errors",
}


__getattr__ = _deprecated_names(__name__, renamed={"BatchkitError": BatchKitError}, moved=_MOVED)
