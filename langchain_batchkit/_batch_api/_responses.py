"""Reading a finished job back: its output and error lines, and messages from answers.

An answer body is turned into an ``AIMessage`` by langchain-openai's own
``_create_chat_result`` (usage, tool calls, finish reason), after the SDK's own
``parse_chat_completion`` when the request carried a ``response_format`` (so
``with_structured_output`` parsers find ``parsed`` as online), and the message
metadata is merged as ``BaseChatModel`` merges it online.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from openai.types import Batch

from langchain_batchkit._batch_api._errors import BatchJobUnfinishedError, BatchRequestError
from langchain_batchkit._batch_api._requests import RequestBuilder

__all__ = [
    "LineOutcome",
    "body_of",
    "line_errors",
    "message_from_body",
    "not_run",
    "parse_lines",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LineOutcome:
    """One line of an output or error file: the answer body, or the error."""

    custom_id: str
    body: Mapping[str, Any] | None = None
    error: Exception | None = None


def parse_lines(data: bytes, *, batch_id: str, status: str) -> Iterator[LineOutcome]:
    """The outcomes in a job's output or error file, one per well-formed line.

    A 200 answer yields its body; another status a :class:`BatchRequestError`
    (status code, the provider's message and code); a line that never ran (e.g.
    ``batch_expired``) a :class:`BatchJobUnfinishedError` with the job's ``status``.

    Example:
        >>> line = b'{"custom_id": "0-1", "response": {"status_code": 200, "body": {"id": "x"}}}'
        >>> next(parse_lines(line, batch_id="b", status="completed")).body
        {'id': 'x'}
    """
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            custom_id = record["custom_id"]
        except (ValueError, KeyError, TypeError):
            logger.warning("job %s: skipping unreadable result line %d", batch_id, number)
            continue
        if not isinstance(custom_id, str):
            logger.warning("job %s: skipping result line %d without a custom_id", batch_id, number)
            continue
        yield _outcome(custom_id, record, batch_id=batch_id, status=status)


def _outcome(
    custom_id: str, record: Mapping[str, Any], *, batch_id: str, status: str
) -> LineOutcome:
    response = record.get("response")
    if isinstance(response, Mapping):
        code = response.get("status_code")
        body = response.get("body")
        if code == 200 and isinstance(body, Mapping):
            return LineOutcome(custom_id, body=body)
        error = body.get("error") if isinstance(body, Mapping) else None
        error = error if isinstance(error, Mapping) else {}
        message = str(error.get("message") or f"the request failed with HTTP {code}")
        return LineOutcome(
            custom_id,
            error=BatchRequestError(
                message,
                status_code=code if isinstance(code, int) else None,
                code=_text(error.get("code")) or _text(error.get("type")),
                batch_id=batch_id,
            ),
        )
    error = record.get("error")
    error = error if isinstance(error, Mapping) else {}
    code = _text(error.get("code"))
    message = str(error.get("message") or "the request did not run")
    return LineOutcome(
        custom_id,
        error=BatchJobUnfinishedError(
            f"job {batch_id} ({status}): {message}",
            status="expired" if code == "batch_expired" else status,
            batch_id=batch_id,
            code=code,
        ),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def message_from_body(
    model: ChatOpenAI, builder: RequestBuilder, body: Mapping[str, Any]
) -> AIMessage:
    """The AIMessage (with usage and response metadata) the model returns online for ``body``."""
    from openai.types.chat import ChatCompletion

    completion: Any = ChatCompletion.model_validate(dict(body))
    if builder.response_format is not None:
        from openai.lib._parsing._completions import parse_chat_completion

        completion = parse_chat_completion(
            response_format=builder.response_format,  # type: ignore[arg-type]
            input_tools=builder.tools if isinstance(builder.tools, list) else [],
            chat_completion=completion,
        )
    result = model._create_chat_result(completion)
    generation = result.generations[0]
    message = generation.message
    if not isinstance(message, AIMessage):
        raise TypeError(f"expected an AIMessage from the answer, got {type(message).__name__}")
    message.response_metadata = {
        **(result.llm_output or {}),
        **(generation.generation_info or {}),
        **message.response_metadata,
    }
    return message


def body_of(outcome: LineOutcome | None) -> Mapping[str, Any] | None:
    """The answer body of a line, if it has one."""
    return outcome.body if outcome is not None else None


def line_errors(batch: Batch) -> dict[int | None, tuple[str | None, str]]:
    """A failed job's validation errors: line number (or None) -> (code, message)."""
    errors: dict[int | None, tuple[str | None, str]] = {}
    data: Any = batch.errors.data if batch.errors is not None else None
    for entry in data or ():
        errors.setdefault(entry.line, (entry.code, entry.message or entry.code or "invalid"))
    return errors


def not_run(
    batch: Batch, line: int, line_errors: Mapping[int | None, tuple[str | None, str]]
) -> Exception:
    """The error of an item its finished job has no result line for."""
    if batch.status == "failed" and line in line_errors:
        code, message = line_errors[line]
        return BatchRequestError(
            f"job {batch.id} refused this request: {message}", code=code, batch_id=batch.id
        )
    reason = ""
    if batch.status == "failed" and line_errors:
        reason = ": " + "; ".join(message for _, message in list(line_errors.values())[:3])
    return BatchJobUnfinishedError(
        f"job {batch.id} ended {batch.status} before this request ran{reason}",
        status=batch.status,
        batch_id=batch.id,
    )
