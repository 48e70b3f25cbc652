"""Running one batch line with the online endpoint's logic, and its JSONL records.

A line is answered exactly as ``POST /v1/chat/completions`` would answer its body
(validation, image checks, ``reject_prompts``, ``response_text``, usage), or, in a
batch on ``/v1/embeddings``, as ``POST /v1/embeddings`` would (the API's limits,
``reject_prompts``, the deterministic vectors, usage), minus the online rate
limiter, latency and faults (a scripted structured mistake is made, see
:func:`scripted_mistake`). In an Azure batch (``/chat/completions``) a line's
``model`` is a deployment: it is answered by the model deployed there, with
Azure's content filter results (see :mod:`._azure_answers`). Its record follows
OpenAI's batch output format: ``response`` holds the HTTP status and body (a failure
is a non-200
``status_code`` with an error body), and ``error`` is reserved for requests that
never ran (``batch_expired``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from langchain_batchkit.testing._fakeserver._azure_answers import (
    AZURE_CHAT,
    as_deployed,
    with_filter_results,
)
from langchain_batchkit.testing._fakeserver._batch_input import BatchLine
from langchain_batchkit.testing._fakeserver._chat import (
    check_not_rejected,
    completion_object,
    compose_answer,
    count_prompt,
    parse_chat_payload,
)
from langchain_batchkit.testing._fakeserver._config import BAD_ANSWERS, BadAnswer, FakeServerConfig
from langchain_batchkit.testing._fakeserver._embeddings import (
    check_inputs_not_rejected,
    embedding_object,
    parse_embedding_body,
)
from langchain_batchkit.testing._fakeserver._exchange import ApiError, error_body

__all__ = ["EMBEDDINGS", "LineResult", "expired_record", "line_prompt_tokens", "run_line"]

#: The endpoint of embeddings batches (any other runs chat lines).
EMBEDDINGS = "/v1/embeddings"

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LineResult:
    """How one line was answered: HTTP status and body, and the tokens it used."""

    record_id: str
    request_id: str
    custom_id: str
    status_code: int
    body: Mapping[str, object] = field(hash=False)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unanswered: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code == 200

    def record(self) -> dict[str, object]:
        """The line of the output file (status 200) or error file (any other).

        An ``unanswered`` failure has no HTTP answer: ``response`` is null and
        ``error`` holds the code and message of the body's error.
        """
        if self.unanswered:
            error = self.body.get("error")
            error = error if isinstance(error, Mapping) else {}
            return {
                "id": self.record_id,
                "custom_id": self.custom_id,
                "response": None,
                "error": {"code": error.get("type"), "message": error.get("message")},
            }
        return {
            "id": self.record_id,
            "custom_id": self.custom_id,
            "response": {
                "status_code": self.status_code,
                "request_id": self.request_id,
                "body": dict(self.body),
            },
            "error": None,
        }


def expired_record(record_id: str, custom_id: str) -> dict[str, object]:
    """The error-file line of a request the batch's window ended before it ran."""
    return {
        "id": record_id,
        "custom_id": custom_id,
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        },
    }


def scripted_mistake(prompt: str, config: FakeServerConfig) -> BadAnswer | None:
    """The first structured mistake the script holds for ``prompt``, in every batch.

    Batch lines keep no per-prompt position in the script (a line is one request):
    a prompt scripted with a mistake makes it in each batch, except in a re-ask whose
    feedback names it, which ``compose_answer`` answers validly.
    """
    for key, steps in config.script.items():
        if key in prompt:
            return next((s for s in steps if s in BAD_ANSWERS), None)
    return None


def line_prompt_tokens(line: BatchLine, config: FakeServerConfig, endpoint: str) -> int:
    """The prompt tokens a line enqueues, counted as its answer would count them (0 for a
    body its run will refuse)."""
    try:
        if endpoint == EMBEDDINGS:
            return parse_embedding_body(json.dumps(line.body).encode(), config).total_tokens
        chat = parse_chat_payload(line.body)
    except ApiError:
        return 0
    return count_prompt(chat.messages, chat.model, config.tokenizer)


def run_line(
    line: BatchLine,
    config: FakeServerConfig,
    *,
    record_id: str,
    request_id: str,
    completion_id: str,
    created: int,
    server_error: bool,
    endpoint: str = "/v1/chat/completions",
) -> LineResult:
    """Answer one line; ``server_error`` makes it fail with 500 (``batch_line_error_rate``)."""

    def failed(status: int, body: dict[str, object]) -> LineResult:
        return LineResult(record_id, request_id, line.custom_id, status, body)

    if server_error:
        message = "The server had an error while processing your request (injected fault)."
        unanswered = config.batch_line_error_style == "line"
        body = error_body(message, "server_error")
        return LineResult(record_id, request_id, line.custom_id, 500, body, unanswered=unanswered)
    try:
        if endpoint == EMBEDDINGS:
            embedding = parse_embedding_body(json.dumps(line.body).encode(), config)
            check_inputs_not_rejected(embedding.inputs, config)
            body = embedding_object(embedding, config)
            tokens = embedding.total_tokens
            return LineResult(record_id, request_id, line.custom_id, 200, body, tokens)
        azure = endpoint == AZURE_CHAT
        chat = parse_chat_payload(as_deployed(line.body, config.models) if azure else line.body)
        check_not_rejected(chat, config)
        answer = compose_answer(chat, config, mistake=scripted_mistake(chat.prompt, config))
    except ApiError as exc:
        return failed(
            exc.status, error_body(exc.message, exc.error_type, code=exc.code, param=exc.param)
        )
    except Exception:
        logger.exception("fake server could not answer batch line %d", line.line)
        message = "The fake server's answer builder raised an exception; see its log."
        return failed(500, error_body(message, "server_error"))
    completion = completion_object(completion_id, chat, answer, created)
    return LineResult(
        record_id,
        request_id,
        line.custom_id,
        200,
        with_filter_results(completion) if azure else completion,
        answer.prompt_tokens,
        answer.completion_tokens,
    )
