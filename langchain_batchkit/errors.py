"""Every exception langchain-batchkit raises on purpose, in one tree.

See :mod:`langchain_batchkit._errors` for the tree drawn out. The most common ones
are also importable from ``langchain_batchkit`` itself.

Example:
    >>> from langchain_batchkit.errors import BatchKitError, ConfigurationError
    >>> issubclass(ConfigurationError, BatchKitError)
    True
"""

from langchain_batchkit._errors import (
    BatchAPIError,
    BatcherStoppedError,
    BatchFailedError,
    BatchJobUnfinishedError,
    BatchKitError,
    BatchOutputMismatchError,
    BatchRequestError,
    BatchStateError,
    BudgetExceededError,
    CheckpointError,
    ConfigurationError,
    CostWarning,
    EventLoopMismatchError,
    ImageSourceError,
    InputSourceError,
    RedactedError,
    RequestTooLargeError,
)

__all__ = [
    "BatchAPIError",
    "BatchFailedError",
    "BatchJobUnfinishedError",
    "BatchKitError",
    "BatchOutputMismatchError",
    "BatchRequestError",
    "BatchStateError",
    "BatcherStoppedError",
    "BudgetExceededError",
    "CheckpointError",
    "ConfigurationError",
    "CostWarning",
    "EventLoopMismatchError",
    "ImageSourceError",
    "InputSourceError",
    "RedactedError",
    "RequestTooLargeError",
]
