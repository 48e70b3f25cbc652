"""What can go wrong for an item sent through a provider's Batch API, as values.

These are item errors: a run records them on each item's
:class:`~langchain_batchkit.ItemResult` and never raises them. Whether an error
is worth a resubmission is decided here, without I/O::

    BatchKitError
    └── BatchAPIError
        ├── BatchRequestError        the provider answered this item's request with an
        │                            error (status_code, code); 5xx/429/408 resubmittable
        ├── BatchJobUnfinishedError  the item's job ended (expired, cancelled, failed)
        │                            before the request ran; expired is resubmittable
        └── BatchStateError          the state file cannot be used for these inputs
"""

from __future__ import annotations

from langchain_batchkit._errors import (
    BatchAPIError,
    BatchJobUnfinishedError,
    BatchRequestError,
    BatchStateError,
)
from langchain_batchkit._retry import is_transient

__all__ = [
    "BatchAPIError",
    "BatchJobUnfinishedError",
    "BatchRequestError",
    "BatchStateError",
    "is_resubmittable",
]


def is_resubmittable(exc: BaseException) -> bool:
    """Would sending this item again in a new job likely succeed?

    Yes for a provider 5xx, 429 or 408 answer, for a job that expired before the
    request ran, and for transient errors creating the job (connections, timeouts).
    No for rejected requests (400s), cancelled jobs (someone meant it) and
    everything else.

    Example:
        >>> is_resubmittable(BatchRequestError("server error", status_code=500))
        True
        >>> is_resubmittable(BatchJobUnfinishedError("x", status="cancelled", batch_id="b"))
        False
    """
    if isinstance(exc, BatchJobUnfinishedError):
        return exc.status == "expired"
    if isinstance(exc, BatchRequestError):
        code = exc.status_code
        return code is not None and (code >= 500 or code in (408, 429))
    return is_transient(exc)
