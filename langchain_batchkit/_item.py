"""One input's outcome: :class:`ItemResult`, its :class:`ItemError`, :class:`TokenUsage`
and the :class:`Attempt` records of its earlier attempts.

These are the values every part of the package passes around per item (the
engine, the checkpoint, the Batch API runner, the Ray driver); the views over
many of them (:class:`BatchResult`, summaries) are in ``_results.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from langchain_batchkit._errors import (
    RedactedError,
    exception_message,
    exception_traceback,
    redact_secrets,
    safe_repr,
)
from langchain_batchkit._serialize import decode_value, encode_value, json_text

__all__ = [
    "Attempt",
    "ItemError",
    "ItemResult",
    "TokenUsage",
    "dump_history",
    "legacy_history",
    "load_history",
]

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass(frozen=True, slots=True)
class ItemError:
    """What went wrong for one item, as text that survives pickling and export.

    Attributes:
        type: the exception's class name, e.g. ``"RateLimitError"``.
        message: ``str(exception)``, with anything resembling an API key redacted.
        traceback: the formatted traceback, redacted likewise.
        module: the module that defines the exception class.
        exception: the live exception when this process captured it; not part of
            equality or the repr, and ``None`` after a round trip through a checkpoint
            or a pickle (its arguments and request headers can carry the API key).
        output: the raw output of the attempt that ended with this error, when the
            kit kept one: the model's last answer when re-asks (:class:`Reask`) ran
            out, so nothing paid for is lost. Kept by checkpoints and pickles; not
            part of equality or the repr.
    """

    type: str
    message: str
    traceback: str = ""
    module: str = ""
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    output: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ItemError:
        """Capture ``exc`` as text, redacting secrets.

        The live exception is kept, but its traceback frames are released once
        formatted, so a million failed items do not pin a million stacks in memory.
        """
        tb = exception_traceback(exc)  # neither raises, whatever __str__ does
        message = exception_message(exc)
        exc.__traceback__ = None
        return cls(
            type=type(exc).__name__,
            message=message,
            traceback=tb,
            module=type(exc).__module__,
            exception=exc,
        )

    def to_dict(self) -> dict[str, Any]:
        """The error as text fields (the live exception is not kept), for stores and
        exports; a kept ``output`` is added in the tagged form the checkpoint uses."""
        data: dict[str, Any] = {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "module": self.module,
        }
        if self.output is not None:
            data["output"] = encode_value(self.output)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ItemError:
        """Read back what :meth:`to_dict` wrote (missing fields are empty; an output
        that cannot be decoded now is kept as its JSON text, with a warning)."""
        return cls(
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
            module=str(data.get("module", "")),
            output=_decode_output(data.get("output"), lenient=True),
        )

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type

    def __repr__(self) -> str:
        # One line: the traceback is on request (``.traceback``), not in every printout.
        return f"ItemError(type={self.type!r}, message={_one_line(self.message, 160)!r})"

    def __reduce__(self) -> tuple[Callable[..., ItemError], tuple[Any, ...]]:
        # Text and the kept output only: the live exception (an openai error holds its
        # request, and the request its ``authorization`` header) never reaches a pickle.
        return ItemError, (self.type, self.message, self.traceback, self.module, None, self.output)

    def stand_in(self) -> RedactedError:
        """An exception of this error's type name and redacted message, to chain or raise."""
        return RedactedError.named(self.type, self.module, self.message, self.traceback)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts reported by the model for one item (or summed over many)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_output(cls, output: object) -> TokenUsage | None:
        """Read ``usage_metadata`` from an ``AIMessage``-like output, if it has one."""
        meta = getattr(output, "usage_metadata", None)
        if not isinstance(meta, Mapping):
            return None
        inp = int(meta.get("input_tokens", 0) or 0)
        out = int(meta.get("output_tokens", 0) or 0)
        return cls(inp, out, int(meta.get("total_tokens", inp + out) or 0))

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
        )


@dataclass(frozen=True, slots=True, repr=False)
class Attempt:
    """One earlier attempt at an item: how it ended, and what it took.

    :attr:`ItemResult.history` holds one per attempt before the item's last,
    oldest first: the retries within a run, the earlier runs that
    :meth:`BatchResult.retry_failed` merged in, the earlier submissions of a
    Batch API run. The last attempt is the ItemResult itself, so
    ``len(result.history) == result.attempts - 1`` wherever every attempt was recorded.

    Attributes:
        error: what the attempt ended with; ``None`` only for an attempt that
            produced an output which was then rejected (see ``output``).
        output: the raw output of an attempt that produced one but was not
            accepted (the model's answer that a re-ask corrected, see
            :class:`Reask`); ``None`` when the attempt raised before any.
        usage: the tokens that attempt's model calls reported, if any.
        cost: what the attempt cost in US dollars, when known.
        latency: seconds from the attempt's start to its end, not counting the
            backoff wait after it.

    Where something was not measured the field keeps its default: a Batch API
    submission has no latency of its own, a record stored before attempts existed
    only its error, and so does the last attempt of an earlier run that had
    retried, when ``retry_failed`` merges it in (that run's result sums usage and
    time over all its attempts).

    Example:
        >>> attempt = Attempt(ItemError("RateLimitError", "slow down"), latency=0.25)
        >>> Attempt.from_dict(attempt.to_dict()) == attempt
        True
        >>> attempt
        Attempt(error=RateLimitError: slow down, 0.25 s)
    """

    error: ItemError | None
    output: Any = None
    usage: TokenUsage | None = None
    cost: float | None = None
    latency: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The attempt as JSON-able fields, for stores and exports (the error as
        :meth:`ItemError.to_dict`, the output in the tagged form the checkpoint uses)."""
        usage = self.usage
        return {
            "error": self.error.to_dict() if self.error is not None else None,
            "output": encode_value(self.output) if self.output is not None else None,
            "usage": [usage.input_tokens, usage.output_tokens, usage.total_tokens]
            if usage is not None
            else None,
            "cost": self.cost,
            "latency": self.latency,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, lenient: bool = False) -> Attempt:
        """Read back what :meth:`to_dict` wrote (missing fields take their defaults).

        Args:
            data: the dict.
            lenient: an output that cannot be decoded now (its class moved) is kept
                as its stored JSON text, with a warning, instead of raising.
        """
        error = data.get("error")
        usage = data.get("usage")
        cost = data.get("cost")
        return cls(
            error=ItemError.from_dict(error) if error is not None else None,
            output=_decode_output(data.get("output"), lenient=lenient),
            usage=TokenUsage(*usage) if usage is not None else None,
            cost=float(cost) if cost is not None else None,
            latency=float(data.get("latency") or 0.0),
        )

    def __repr__(self) -> str:
        shown = f"error={_one_line(str(self.error), 120)}" if self.error else "error=None"
        if self.output is not None:
            shown += f", output={_one_line(safe_repr(self.output), 80)}"
        if self.usage is not None:
            shown += f", {self.usage.total_tokens} tokens"
        if self.cost is not None:
            shown += f", ${self.cost:.6g}"
        return f"Attempt({shown}, {self.latency:.2f} s)"


def dump_history(history: Iterable[Attempt]) -> str:
    """Attempts as one JSON text (a list of :meth:`Attempt.to_dict`), for the stores."""
    return json_text([attempt.to_dict() for attempt in history])


def load_history(text: str | None, *, lenient: bool = False) -> tuple[Attempt, ...]:
    """Read back :func:`dump_history`'s text (``None``: no attempts)."""
    if not text:
        return ()
    return tuple(Attempt.from_dict(data, lenient=lenient) for data in json.loads(text))


def legacy_history(text: str) -> str:
    """A history stored before attempts existed (a JSON list of :meth:`ItemError.to_dict`)
    in :func:`dump_history`'s form: one attempt per error, nothing else known.

    Example:
        >>> load_history(legacy_history('[{"type": "TimeoutError", "message": "late"}]'))
        (Attempt(error=TimeoutError: late, 0.00 s),)
    """
    return dump_history(Attempt(ItemError.from_dict(error)) for error in json.loads(text))


def _decode_output(data: Any, *, lenient: bool) -> Any:
    if data is None:
        return None
    try:
        return decode_value(data)
    except Exception:
        if not lenient:
            raise
        logger.warning("an attempt's stored output cannot be loaded back; keeping its JSON text")
        return json_text(data)


@dataclass(frozen=True, slots=True, repr=False)
class ItemResult(Generic[InputT, OutputT]):
    """The outcome of one input: its output or its error, never both.

    Attributes:
        index: the input's position in the batch (stable across retries and resumes).
        input: the input as given.
        output: the chain's output, or ``None`` when the item failed.
        error: what went wrong, or ``None`` when the item succeeded.
        attempts: how many times the chain was called for this item.
        latency: seconds from the item's first start to its end.
        usage: token counts of the model calls of its attempts in the run that
            made it (or its output's ``usage_metadata``); earlier runs' are in ``history``.
        history: the earlier attempts (retried, or re-run by ``retry_failed``),
            oldest first, as :class:`Attempt` records.
        key: the item's checkpoint key (``str(index)`` unless a ``key=`` function
            was given), when the run used a checkpoint.
        cost: what the item cost in US dollars over all its attempts, when known
            (``None``: not priced).
        not_run: the item was not run to the end because the run stopped (its
            :class:`~langchain_batchkit.Budget` ran out): neither ok nor failed, its
            ``error`` says why, and it is not checkpointed, so a resumed run runs it.
    """

    index: int
    input: InputT
    output: OutputT | None = None
    error: ItemError | None = None
    attempts: int = 1
    latency: float = 0.0
    usage: TokenUsage | None = None
    history: tuple[Attempt, ...] = ()
    key: str | None = None
    cost: float | None = None
    not_run: bool = False

    @property
    def ok(self) -> bool:
        """True when the item produced an output."""
        return self.error is None

    @property
    def status(self) -> str:
        """``"ok"``, ``"failed"`` or ``"not_run"`` (the run stopped before it finished)."""
        if self.not_run:
            return "not_run"
        return "ok" if self.error is None else "failed"

    def __repr__(self) -> str:
        # One line, whatever the input and output: each is cut short, redacted, and
        # shown as a placeholder if its repr raises; the error's traceback is on
        # request (``result.error.traceback``).
        state = self.status.replace("_", " ")
        head = f"#{self.index} {state}, attempts={self.attempts}, {self.latency:.2f} s"
        if self.key is not None and self.key != str(self.index):
            head += f", key={_one_line(self.key, 40)!r}"
        shown = f"input={_one_line(safe_repr(self.input), 60)}"
        if self.error is None:
            shown += f", output={_one_line(safe_repr(self.output), 80)}"
        else:
            shown += f", error={_one_line(str(self.error), 120)}"
        return f"{type(self).__qualname__}({head}, {shown})"

    def to_record(self) -> dict[str, Any]:
        """A flat dict for tables and JSON export."""
        usage = self.usage
        return {
            "index": self.index,
            "ok": self.ok,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error_type": self.error.type if self.error else None,
            "error_message": self.error.message if self.error else None,
            "attempts": self.attempts,
            "latency_s": self.latency,
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "total_tokens": usage.total_tokens if usage else None,
            "cost_usd": self.cost,
        }


def _one_line(text: str, limit: int) -> str:
    """``text`` redacted, on one line, cut to ``limit`` characters."""
    flat = " ".join(redact_secrets(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
