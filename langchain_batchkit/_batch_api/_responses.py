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
from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import ValidationError

from langchain_batchkit._batch_api._errors import (
    BatchJobUnfinishedError,
    BatchRequestError,
    unfinished_error,
)
from langchain_batchkit._batch_api._jobapi import JobView, LineOutcome
from langchain_batchkit._batch_api._requests import RequestBuilder
from langchain_batchkit._errors import exception_message

__all__ = [
    "RejectedAnswer",
    "body_of",
    "message_from_body",
    "not_run",
    "parse_lines",
]

logger = logging.getLogger(__name__)


def parse_lines(data: bytes, *, batch_id: str, status: str) -> Iterator[LineOutcome]:
    """The outcomes in a job's output or error file, one per well-formed line.

    A 200 answer yields its body; another status a :class:`BatchRequestError`
    (status code, the provider's message and code); a line with no answer but an
    error object (``response: null``) the error its code calls for (see
    :func:`unfinished_error`: ``batch_expired`` and ``server_error`` are sent again,
    ``batch_cancelled`` is not).

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
    return LineOutcome(custom_id, error=unfinished_error(code, message, batch_id, status))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class RejectedAnswer(OutputParserException):
    """An answer that came back, but failed its ``response_format``'s validation.

    Online, the SDK validates inside the call and the answer is lost; here the
    answer is kept (``answer``), so a re-ask can send it back and a failed item
    keeps what was paid for.
    """

    def __init__(self, cause: Exception, answer: AIMessage) -> None:
        super().__init__(exception_message(cause), llm_output=str(answer.content))
        self.answer = answer


def message_from_body(
    model: BaseChatOpenAI, builder: RequestBuilder, body: Mapping[str, Any]
) -> AIMessage:
    """The AIMessage (with usage and response metadata) the model returns online for ``body``.

    Raises:
        RejectedAnswer: the answer does not validate against the bound ``response_format``.
    """
    from openai.types.chat import ChatCompletion

    completion: Any = ChatCompletion.model_validate(dict(body))
    if builder.response_format is not None:
        from openai.lib._parsing._completions import parse_chat_completion

        try:
            completion = parse_chat_completion(
                response_format=builder.response_format,  # type: ignore[arg-type]
                input_tools=builder.tools if isinstance(builder.tools, list) else [],
                chat_completion=completion,
            )
        except (ValidationError, ValueError) as exc:
            raise RejectedAnswer(exc, _message(model, completion)) from exc
    return _message(model, completion)


def _message(model: BaseChatOpenAI, completion: Any) -> AIMessage:
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


def not_run(job: JobView, line: int) -> Exception:
    """The error of an item its finished job has no result line for."""
    if job.outcome == "failed" and line in job.errors:
        code, message = job.errors[line]
        return BatchRequestError(
            f"job {job.id} refused this request: {message}", code=code, batch_id=job.id
        )
    reason = ""
    if job.outcome == "failed" and job.errors:
        reason = ": " + "; ".join(message for _, message in list(job.errors.values())[:3])
    return BatchJobUnfinishedError(
        f"job {job.id} ended {job.outcome or job.status} before this request ran{reason}",
        status=job.outcome or job.status,
        batch_id=job.id,
    )
