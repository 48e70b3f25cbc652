"""The exception tree of langchain-batchkit: every class lives here.

Every exception the library raises on purpose derives from :class:`BatchKitError`,
so ``except BatchKitError`` catches all of them and nothing else::

    BatchKitError
    ├── ConfigurationError          (also ValueError) a bad option or call, named
    ├── EventLoopMismatchError      (also RuntimeError) a client bound to another loop
    ├── InputSourceError            reading the next input from your iterable raised
    ├── BatchFailedError            raised by ``BatchResult.raise_for_errors()``
    ├── CheckpointError             a checkpoint file cannot be used (whose, version, lock)
    ├── BatcherStoppedError         (also RuntimeError) a stopped MicroBatcher was called
    ├── BatchOutputMismatchError    a batch function returned the wrong number of results
    ├── ImageSourceError            (also ValueError) an image cannot be sent (an item's error)
    ├── RequestTooLargeError        a request can never fit tokens_per_minute (a call's error)
    ├── BudgetExceededError         a model call would pass the dollar Budget (a call's error)
    └── BatchAPIError               the provider Batch API
        ├── BatchRequestError       the provider answered one item's request with an error
        ├── BatchJobUnfinishedError the item's job ended before its request ran
        └── BatchStateError         the state file belongs to other inputs or another chain

Item failures are never raised by a batch run: they are recorded as
:class:`~langchain_batchkit.ItemError` values on each result. The cause chained to a
``BatchFailedError`` is a :class:`RedactedError`, a text-only stand-in for the first
failed item's exception (never raised itself, so not part of the tree).
Warnings: :class:`CostWarning` (``UserWarning``), once per model with no known price.
``BatchkitError`` is the deprecated spelling of ``BatchKitError`` (one release).
"""

from __future__ import annotations

import math
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_batchkit._deprecation import deprecated_names as _deprecated_names

if TYPE_CHECKING:
    from langchain_batchkit._results import ItemResult

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
    "describe_exception",
    "dollars",
    "exception_message",
    "exception_traceback",
    "redact_secrets",
    "safe_repr",
]

# Whole tokens that are keys by their shape: OpenAI (sk-...), Google (AIza...),
# Hugging Face (hf_...), GitHub (ghp_...), AWS access key ids (AKIA...).
_KEY_SHAPES = re.compile(
    r"sk-[A-Za-z0-9_\-]{6,}|AIza[0-9A-Za-z_\-]{20,}|hf_[A-Za-z0-9]{10,}"
    r"|gh[pousr]_[A-Za-z0-9]{10,}|AKIA[0-9A-Z]{12,}"
)
# Values after a name that says "secret": bearer tokens, api_key=, key= in URLs, tokens.
_NAMED_SECRETS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.=]{8,}"),
    re.compile(
        r"(?i)((?:api[_-]?key|secret(?:[_-]access)?[_-]?key|access[_-]?token|auth[_-]?token"
        r"|token|password|secret)['\"]?\s*[:=]\s*['\"]?)[^\s'\",}&]{6,}"
    ),
    re.compile(r"(?i)([?&](?:key|api_key|token|access_token)=)[^\s&#'\"]{6,}"),
)


def redact_secrets(text: str) -> str:
    """Replace anything that looks like an API key or bearer token with ``***``.

    Errors, logs, reprs and checkpoints pass through this, so a key that a
    provider echoes back in an error message never reaches the user's files.

    Example:
        >>> redact_secrets("Incorrect API key provided: sk-abcdef123456")
        'Incorrect API key provided: ***'
    """
    text = _KEY_SHAPES.sub("***", text)
    for pattern in _NAMED_SECRETS:
        text = pattern.sub(r"\1***", text)
    return text


def safe_repr(value: object) -> str:
    """``repr(value)``, or a placeholder naming its type when that ``repr`` raises.

    Inputs and outputs are the user's objects: showing one must never raise.

    Example:
        >>> class Broken:
        ...     def __repr__(self) -> str:
        ...         raise RuntimeError
        >>> safe_repr(Broken())
        '<Broken object: repr() raised RuntimeError>'
    """
    try:
        return repr(value)
    except Exception as exc:
        return f"<{type(value).__name__} object: repr() raised {type(exc).__name__}>"


def exception_message(exc: BaseException) -> str:
    """``str(exc)`` with secrets redacted; never raises, even when ``__str__`` does."""
    try:
        message = str(exc)
    except Exception as broken:
        message = f"<str() of this {type(exc).__name__} raised {type(broken).__name__}>"
    return redact_secrets(message)


def describe_exception(exc: BaseException) -> str:
    """``"Type: message"`` with secrets redacted, for logs; never raises.

    Logging ``%r`` of a provider error would print its arguments, and so the API
    key an error body echoes; this is what batchkit logs instead.
    """
    message = exception_message(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def exception_traceback(exc: BaseException) -> str:
    """The formatted traceback of ``exc`` (its causes too), secrets redacted; never raises."""
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        text = f"{type(exc).__name__}: <the traceback could not be formatted>"
    return redact_secrets(text)


class BatchKitError(Exception):
    """Base class of every exception langchain-batchkit raises on purpose."""


class ConfigurationError(BatchKitError, ValueError):
    """An option was invalid; the message names the option and the accepted values."""


class EventLoopMismatchError(BatchKitError, RuntimeError):
    """A model's HTTP client belongs to another (or a closed) event loop.

    langchain-openai caches one async client per model configuration; two
    ``asyncio.run(...)`` calls with the same model make the second use the first
    loop's connections. The run stops at once instead of failing every row.
    """


class BatchFailedError(BatchKitError):
    """Some items of a batch failed; raised only by ``BatchResult.raise_for_errors()``.

    Attributes:
        failed: the failed item results, in input order.
        total: how many items the batch had.
    """

    def __init__(self, failed: Sequence[ItemResult[Any, Any]], total: int) -> None:
        self.failed = list(failed)
        self.total = total
        shown = self.failed[:20]
        lines = [f"{len(self.failed)} of {total} items failed:"]
        lines += [f"  [{r.index}] {r.error}" for r in shown]
        if len(self.failed) > len(shown):
            lines.append(f"  ... and {len(self.failed) - len(shown)} more")
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Callable[..., BatchFailedError], tuple[Any, ...]]:
        # The default would call __init__ with the message alone, and fail to load.
        return type(self), (self.failed, self.total)


class RedactedError(Exception):
    """A text-only stand-in for an item's exception: its type's name, its redacted message.

    ``BatchResult.raise_for_errors()`` chains one (``raise BatchFailedError(...) from
    stand_in``) instead of the item's live exception: a provider error's arguments,
    body and request headers can hold the API key, and the traceback of an uncaught
    exception prints its causes. The stand-in's class has the original's name and
    module, so the traceback reads as before, with the key redacted; on Python 3.11+
    a note carries the item's redacted traceback.

    Example:
        >>> cause = RedactedError.named("AuthenticationError", "openai", "Error code: 401 - ***")
        >>> type(cause).__name__, str(cause), isinstance(cause, RedactedError)
        ('AuthenticationError', 'Error code: 401 - ***', True)
    """

    @classmethod
    def named(cls, type_name: str, module: str, message: str, tb_text: str = "") -> RedactedError:
        """A stand-in whose class is named ``type_name`` and lives in ``module``."""
        namespace = {"__module__": module or "builtins", "__qualname__": type_name}
        stand_in: RedactedError = type(type_name, (cls,), namespace)(message)
        if tb_text and sys.version_info >= (3, 11):
            stand_in.add_note(
                f"(batchkit: a redacted copy; the item's traceback:)\n{tb_text.rstrip()}"
            )
        return stand_in

    def __reduce__(self) -> tuple[Callable[..., RedactedError], tuple[str, str, str]]:
        # Its class is made per call, so pickle rebuilds it by name instead of by reference.
        named = type(self)
        return RedactedError.named, (named.__qualname__, named.__module__, str(self))


class BatchAPIError(BatchKitError):
    """Base class of the Batch API's errors."""


class BatchRequestError(BatchAPIError):
    """The provider answered one item's request with an error.

    Attributes:
        status_code: the HTTP status of the request's answer (``None`` when the
            request never got one, e.g. a line the batch's validation refused).
        code: the provider's error code (``"invalid_request_error"``, ...), if any.
        batch_id: the job the request ran in, if it was created.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.batch_id = batch_id


class BatchJobUnfinishedError(BatchAPIError):
    """The item's job ended before its request ran: expired, cancelled or failed.

    Attributes:
        status: the job's final status (``"expired"``, ``"cancelled"``, ``"failed"``).
        batch_id: the job's id.
        code: the provider's per-line code, e.g. ``"batch_expired"``, if it gave one.
    """

    def __init__(
        self, message: str, *, status: str, batch_id: str | None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.batch_id = batch_id
        self.code = code


class BatchStateError(BatchAPIError):
    """The state file belongs to other inputs, another chain or another version."""


class CheckpointError(BatchKitError):
    """A checkpoint file cannot be used: another job's, another version, corrupt or locked."""


class BatcherStoppedError(BatchKitError, RuntimeError):
    """The MicroBatcher was stopped (or is stopping): it takes no new calls."""


class BatchOutputMismatchError(BatchKitError):
    """A batch function returned a different number of results than it got inputs.

    Every caller of that batch gets this error: results cannot be matched to
    callers by position when the count is wrong.
    """


class InputSourceError(BatchKitError):
    """Reading the next input from the user's iterable raised.

    Items that finished before it are kept (``kit.last_run``); the cause is chained.
    """


class ImageSourceError(BatchKitError, ValueError):
    """An image source cannot be sent: missing, not an image, too large, or a bad URL.

    In a batch it becomes that item's error (the other items run); called directly
    (``image_message``) it is raised. The message names the source, then the cause.

    Attributes:
        source: a short description of the source (its path or URL, ``<bytes 1234>``).
        reason: what is wrong with it.

    Example:
        >>> str(ImageSourceError("photos/cat.jpg", "no such file"))
        'photos/cat.jpg: no such file'
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")

    def __reduce__(self) -> tuple[type[ImageSourceError], tuple[str, str]]:
        return type(self), (self.source, self.reason)


class RequestTooLargeError(BatchKitError):
    """A request is estimated at more tokens than ``tokens_per_minute`` allows.

    It could never fit in the budget, so the model call fails at once (it is not
    transient, and no retry is made) instead of waiting minutes for a turn that the
    provider would refuse anyway.

    Attributes:
        estimate: the tokens the request is estimated at (prompt plus ``max_tokens``).
        limit: the limiter's ``tokens_per_minute``.
    """

    is_retryable = False

    def __init__(self, estimate: int, limit: float) -> None:
        self.estimate = estimate
        self.limit = limit
        super().__init__(
            f"this request is estimated at {estimate} tokens, more than "
            f"tokens_per_minute={limit:g}: it can never fit, so it fails now instead of "
            "waiting. Shorten it, lower max_tokens (the estimate counts the completion, "
            "256 tokens when max_tokens is unset), or raise "
            "tokens_per_minute."
        )

    def __reduce__(self) -> tuple[type[RequestTooLargeError], tuple[int, float]]:
        return type(self), (self.estimate, self.limit)


def dollars(usd: float) -> str:
    """US dollars for people: cents for big sums, enough digits for a fraction of a cent.

    Example:
        >>> dollars(1234.5), dollars(0.0312), dollars(0.000033), dollars(0.00012345), dollars(0)
        ('$1,234.50', '$0.0312', '$0.000033', '$0.00012', '$0')
    """
    if usd == 0:
        return "$0"
    if abs(usd) >= 1:
        return f"${usd:,.2f}"
    if abs(usd) >= 0.01:
        return f"${usd:.4f}"
    places = min(12, 1 - math.floor(math.log10(abs(usd))))  # two significant digits
    return f"${usd:.{places}f}"


class BudgetExceededError(BatchKitError):
    """A model call was not made: its worst-case cost would pass the dollar budget.

    Raised when the call starts, before anything is sent or paid, so the item that
    made it is reported as *not run* (a resumed run with a larger budget runs it).
    Not retryable: a retry would meet the same budget.

    Attributes:
        needed: the call's worst-case cost in US dollars.
        left: what the budget had left (its cap minus spent and reserved).
        cap: the budget's cap.
    """

    is_retryable = False

    def __init__(self, needed: float, left: float, cap: float) -> None:
        self.needed = needed
        self.left = left
        self.cap = cap
        super().__init__(
            f"this model call may cost up to {dollars(needed)}, and the budget has "
            f"{dollars(max(left, 0.0))} of {dollars(cap)} left: not sent"
        )

    def __reduce__(self) -> tuple[type[BudgetExceededError], tuple[float, float, float]]:
        return type(self), (self.needed, self.left, self.cap)


class CostWarning(UserWarning):
    """A model's price is unknown, so its calls cost ``None`` (said once per model)."""


__getattr__ = _deprecated_names(__name__, renamed={"BatchkitError": BatchKitError})
