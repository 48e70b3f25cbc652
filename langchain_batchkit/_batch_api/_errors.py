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

from typing import Final

from langchain_batchkit._errors import (
    BatchAPIError,
    BatchJobUnfinishedError,
    BatchRequestError,
    BatchStateError,
)
from langchain_batchkit._retry import is_transient

__all__ = [
    "RESUBMIT_CODES",
    "BatchAPIError",
    "BatchJobUnfinishedError",
    "BatchRequestError",
    "BatchStateError",
    "is_resubmittable",
    "unfinished_error",
]

#: Providers' error codes (OpenAI's and Anthropic's) for a request that did not get
#: an answer for a passing reason: sent again in a new job.
RESUBMIT_CODES: Final = frozenset(
    {
        "server_error",
        "internal_error",
        "api_error",
        "overloaded_error",
        "timeout",
        "request_timeout",
        "timeout_error",
        "rate_limit_exceeded",
        "rate_limit_error",
    }
)
_EXPIRED: Final = frozenset({"batch_expired", "expired"})
_CANCELLED: Final = frozenset({"batch_cancelled", "cancelled", "canceled"})


def unfinished_error(
    code: str | None, message: str, batch_id: str | None, status: str
) -> BatchRequestError | BatchJobUnfinishedError:
    """The error of a result line that carries no answer, only an error object.

    Decided by the provider's code: expired and cancelled requests are
    :class:`BatchJobUnfinishedError` (expired ones are sent again, cancelled ones
    not); any other code is a :class:`BatchRequestError` naming it, sent again when
    it is in :data:`RESUBMIT_CODES` (server errors, timeouts, rate limits).

    Example:
        >>> error = unfinished_error("server_error", "boom", "batch_1", "completed")
        >>> str(error), is_resubmittable(error)
        ('job batch_1 (completed): the provider reported server_error: boom', True)
    """
    unfinished = "expired" if code in _EXPIRED else "cancelled" if code in _CANCELLED else None
    if unfinished is not None or code is None:
        return BatchJobUnfinishedError(
            f"job {batch_id} ({status}): {message}",
            status=unfinished or status,
            batch_id=batch_id,
            code=code,
        )
    return BatchRequestError(
        f"job {batch_id} ({status}): the provider reported {code}: {message}",
        code=code,
        batch_id=batch_id,
    )


def is_resubmittable(exc: BaseException) -> bool:
    """Would sending this item again in a new job likely succeed?

    Yes for a provider 5xx, 429 or 408 answer, for a request that got no answer for
    a code in :data:`RESUBMIT_CODES`, for a job that expired before the request ran,
    and for transient errors creating the job (connections, timeouts).
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
        status = exc.status_code
        if status is None:
            return exc.code in RESUBMIT_CODES
        return status >= 500 or status in (408, 429)
    return is_transient(exc)
