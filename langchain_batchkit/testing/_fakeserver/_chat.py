"""What a chat completion request means and how it is answered, without any I/O.

Shared by the online ``/v1/chat/completions`` endpoint and the Batch API, so a batch
line is validated and answered exactly as the same request sent online would be.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from langchain_batchkit.testing._fakeserver._config import FakeServerConfig
from langchain_batchkit.testing._fakeserver._exchange import InvalidRequest
from langchain_batchkit.testing._fakeserver._images import check_image_url

__all__ = [
    "ChatAnswer",
    "ChatRequest",
    "check_not_rejected",
    "completion_object",
    "compose_answer",
    "estimate_tokens",
    "parse_chat_body",
    "parse_chat_payload",
    "stream_events",
]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a chat completion request the fake server acts on."""

    model: str
    prompt: str
    prompt_tokens: int
    image_count: int
    max_tokens: int | None
    stream: bool
    include_usage: bool


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    """The answer to one request, and what it costs against a token limit."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost: int

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _message_text(content: object, index: int) -> tuple[str, int]:
    """The text of one message's content and its number of (validated) images."""
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise InvalidRequest(
            f"'messages[{index}].content' must be a string or an array of content parts.",
            param=f"messages[{index}].content",
        )
    texts: list[str] = []
    images = 0
    for j, part in enumerate(content):
        param = f"messages[{index}].content[{j}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"'{param}' must be an object.", param=param)
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"'{param}.text' must be a string.", param=param)
            texts.append(text)
        elif kind == "image_url":
            check_image_url(part, param)
            images += 1
    return "\n".join(texts), images


def parse_chat_body(body: bytes) -> ChatRequest:
    """Parse an HTTP body; raises :class:`InvalidRequest` as the real API answers 400."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest("We could not parse the JSON body of your request.") from exc
    return parse_chat_payload(payload)


def parse_chat_payload(payload: object) -> ChatRequest:
    """Validate an already decoded request body (a batch line's ``body``)."""
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "You must provide a model parameter.", param="model", code="missing_required_parameter"
        )
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    prompt = ""
    prompt_tokens = 3
    image_count = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"'messages[{i}]' must be an object with a string 'role'.", param=f"messages[{i}]"
            )
        text, images = _message_text(message.get("content"), i)
        prompt_tokens += 4 + estimate_tokens(text) + 85 * images
        image_count += images
        if message["role"] == "user":
            prompt = text
    max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise InvalidRequest("'max_tokens' must be a positive integer.", param="max_tokens")
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(model, prompt, prompt_tokens, image_count, max_tokens, stream, include_usage)


def check_not_rejected(chat: ChatRequest, config: FakeServerConfig) -> None:
    """Raise the 400 a prompt containing one of ``reject_prompts`` always gets."""
    rejected = sorted(s for s in config.reject_prompts if s in chat.prompt)
    if rejected:
        raise InvalidRequest(
            f"This prompt was rejected by the fake server (reject_prompts: {rejected[0]!r}).",
            code="rejected_prompt",
            param="messages",
        )


def compose_answer(chat: ChatRequest, config: FakeServerConfig) -> ChatAnswer:
    """Build the answer with ``config.response_text`` (whose exceptions propagate)."""
    text = config.response_text(chat.prompt)
    finish_reason = "stop"
    if chat.max_tokens is not None and estimate_tokens(text) > chat.max_tokens:
        text, finish_reason = text[: chat.max_tokens * 4], "length"
    completion_tokens = estimate_tokens(text)
    return ChatAnswer(
        text=text,
        finish_reason=finish_reason,
        prompt_tokens=chat.prompt_tokens,
        completion_tokens=completion_tokens,
        cost=chat.prompt_tokens + (chat.max_tokens or completion_tokens),
    )


def completion_object(
    completion_id: str, chat: ChatRequest, answer: ChatAnswer, created: int
) -> dict[str, object]:
    """The ``chat.completion`` JSON object, as the online endpoint and batch lines send it."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": chat.model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": None},
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": answer.usage,
    }


def _sse(payload: object) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def stream_events(
    completion_id: str, chat: ChatRequest, answer: ChatAnswer, created: int
) -> tuple[bytes, ...]:
    """The answer as server-sent ``chat.completion.chunk`` events, one per word, then [DONE]."""

    def chunk(delta: Mapping[str, str], finish: str | None) -> dict[str, object]:
        event: dict[str, object] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": chat.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}
            ],
        }
        if chat.include_usage:
            event["usage"] = None
        return event

    events = [_sse(chunk({"role": "assistant", "content": ""}, None))]
    events += [
        _sse(chunk({"content": piece}, None)) for piece in re.findall(r"\s*\S+|\s+$", answer.text)
    ]
    events.append(_sse(chunk({}, answer.finish_reason)))
    if chat.include_usage:
        events.append(
            _sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": chat.model,
                    "choices": [],
                    "usage": answer.usage,
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    return tuple(events)
