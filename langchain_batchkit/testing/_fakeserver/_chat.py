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

from langchain_batchkit import _tokenize
from langchain_batchkit.testing._fakeserver._config import (
    BadAnswer,
    FakeServerConfig,
    TokenCounting,
)
from langchain_batchkit.testing._fakeserver._exchange import InvalidRequest
from langchain_batchkit.testing._fakeserver._images import check_image_url
from langchain_batchkit.testing._fakeserver._structured import (
    Conversation,
    StructuredSpec,
    answer_object,
    assistant_message,
    call_arguments,
    check_tool_messages,
    conversation_of,
    names_mistake,
    spoil,
    structured_spec,
    tool_call,
)

__all__ = [
    "SERVICE_TIERS",
    "ChatAnswer",
    "ChatRequest",
    "MessageContent",
    "check_not_rejected",
    "check_service_tier",
    "completion_object",
    "compose_answer",
    "count_completion",
    "count_prompt",
    "estimate_tokens",
    "parse_chat_body",
    "parse_chat_payload",
    "stream_events",
]


SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")


@dataclass(frozen=True, slots=True)
class MessageContent:
    """What one message carries that costs tokens: its text parts and its image count."""

    texts: tuple[str, ...]
    images: int


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a chat completion request the fake server acts on.

    ``service_tier`` is what the request asked for (``None`` when it did not say).
    ``structured`` is the structured answer it asks for, if any, and ``conversation``
    the parts a re-ask is judged by, when it ends with feedback on an answer.
    """

    model: str
    prompt: str
    messages: tuple[MessageContent, ...]
    image_count: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    service_tier: str | None = None
    structured: StructuredSpec | None = None
    conversation: Conversation | None = None

    @property
    def flex(self) -> bool:
        return self.service_tier == "flex"

    @property
    def tier_used(self) -> str:
        """The tier a completion reports: ``"auto"`` and ``"scale"`` are served by default."""
        return self.service_tier if self.service_tier in ("flex", "priority") else "default"


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    """The answer to one request, and what it costs against a token limit.

    With ``tool`` set, the answer is a call of that tool and ``text`` its arguments.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost: int
    cached_tokens: int = 0
    tool: str | None = None

    @property
    def usage(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
        }


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def count_prompt(messages: tuple[MessageContent, ...], model: str, tokenizer: TokenCounting) -> int:
    """A request's prompt tokens, counted as ``FakeServerConfig.tokenizer`` says."""
    if tokenizer == "chars":
        return 3 + sum(4 + estimate_tokens("\n".join(m.texts)) + 85 * m.images for m in messages)
    per_message = _tokenize.PER_MESSAGE
    return _tokenize.REPLY_PRIMING + sum(
        per_message
        + sum(_tokenize.count_text(text, model).tokens for text in m.texts)
        + _tokenize.IMAGE_TOKENS * m.images
        for m in messages
    )


def count_completion(text: str, model: str, tokenizer: TokenCounting) -> int:
    """An answer's completion tokens, counted as ``FakeServerConfig.tokenizer`` says."""
    if tokenizer == "chars":
        return estimate_tokens(text)
    return _tokenize.count_text(text, model).tokens


def _truncate(text: str, max_tokens: int, model: str, tokenizer: TokenCounting) -> str:
    """The longest prefix of ``text`` counted as at most ``max_tokens`` tokens.

    Counts of prefixes grow with their length (near enough for BPE), so a binary
    search finds it; the result always fits, whatever the tokenizer does.
    """
    if tokenizer == "chars":
        return text[: max_tokens * 4]
    low, high = 0, len(text)  # text[:low] fits, text[:high + 1] does not
    while low < high:
        middle = (low + high + 1) // 2
        if count_completion(text[:middle], model, tokenizer) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _message_content(content: object, index: int) -> MessageContent:
    """The text parts of one message's content and its number of (validated) images."""
    if content is None:
        return MessageContent((), 0)
    if isinstance(content, str):
        return MessageContent((content,), 0)
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
    return MessageContent(tuple(texts), images)


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
    contents: list[MessageContent] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"'messages[{i}]' must be an object with a string 'role'.", param=f"messages[{i}]"
            )
        content = _message_content(message.get("content"), i)
        calls = message.get("tool_calls")
        if isinstance(calls, list):  # the arguments an assistant sent back cost tokens too
            arguments = tuple(call_arguments(call) for call in calls)
            content = MessageContent(content.texts + arguments, content.images)
        contents.append(content)
        if message["role"] == "user":
            prompt = "\n".join(content.texts)
    check_tool_messages(messages)
    structured = structured_spec(payload)
    conversation = conversation_of(messages) if structured is not None else None
    if conversation is not None:
        prompt = conversation.prompt
    max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise InvalidRequest("'max_tokens' must be a positive integer.", param="max_tokens")
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    service_tier = payload.get("service_tier")
    if service_tier is not None and service_tier not in SERVICE_TIERS:
        supported = ", ".join(repr(tier) for tier in SERVICE_TIERS)
        raise InvalidRequest(
            f"Invalid value: {service_tier!r}. Supported values are: {supported}.",
            param="service_tier",
            code="invalid_value",
        )
    return ChatRequest(
        model=model,
        prompt=prompt,
        messages=tuple(contents),
        image_count=sum(content.images for content in contents),
        max_tokens=max_tokens,
        stream=stream,
        include_usage=include_usage,
        service_tier=service_tier,
        structured=structured,
        conversation=conversation,
    )


def check_not_rejected(chat: ChatRequest, config: FakeServerConfig) -> None:
    """Raise the 400 a prompt containing one of ``reject_prompts`` always gets."""
    rejected = sorted(s for s in config.reject_prompts if s in chat.prompt)
    if rejected:
        raise InvalidRequest(
            f"This prompt was rejected by the fake server (reject_prompts: {rejected[0]!r}).",
            code="rejected_prompt",
            param="messages",
        )


def check_service_tier(chat: ChatRequest, config: FakeServerConfig) -> None:
    """Raise the 400 a model in ``flex_unsupported_models`` answers to a flex request."""
    if chat.flex and chat.model in config.flex_unsupported_models:
        raise InvalidRequest(
            f"Unsupported service_tier: flex (the model '{chat.model}' does not offer it).",
            param="service_tier",
        )


def compose_answer(
    chat: ChatRequest, config: FakeServerConfig, mistake: BadAnswer | None = None
) -> ChatAnswer:
    """Build the answer with ``config.response_text`` (whose exceptions propagate).

    With ``structured_answers``, a structured request gets a tool call or a JSON
    object, with ``mistake`` made in it unless the request is a re-ask whose
    feedback names the previous answer's mistake.
    """
    tokenizer = config.tokenizer
    text = config.response_text(chat.prompt)
    tool = None
    if config.structured_answers and chat.structured is not None:
        valid = answer_object(chat.structured, chat.prompt, text)
        if chat.conversation is not None and names_mistake(chat.conversation, valid):
            mistake = None
        text = spoil(valid, mistake) if mistake is not None else json.dumps(valid)
        tool = chat.structured.tool
    finish_reason = "stop"
    completion_tokens = count_completion(text, chat.model, tokenizer)
    if chat.max_tokens is not None and completion_tokens > chat.max_tokens:
        text, finish_reason = _truncate(text, chat.max_tokens, chat.model, tokenizer), "length"
        completion_tokens = count_completion(text, chat.model, tokenizer)
    prompt_tokens = count_prompt(chat.messages, chat.model, tokenizer)
    return ChatAnswer(
        text=text,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost=prompt_tokens + (chat.max_tokens or completion_tokens),
        cached_tokens=math.floor(prompt_tokens * config.cached_prompt_fraction),
        tool=tool,
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
        "service_tier": chat.tier_used,
        "choices": [
            {
                "index": 0,
                "message": assistant_message(completion_id, answer.text, answer.tool),
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

    def chunk(delta: Mapping[str, object], finish: str | None) -> dict[str, object]:
        event: dict[str, object] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": chat.model,
            "system_fingerprint": "fp_fake",
            "service_tier": chat.tier_used,
            "choices": [
                {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}
            ],
        }
        if chat.include_usage:
            event["usage"] = None
        return event

    events = [_sse(chunk({"role": "assistant", "content": ""}, None))]
    if answer.tool is not None:
        events.append(
            _sse(
                chunk(
                    {
                        "tool_calls": [
                            {"index": 0, **tool_call(completion_id, answer.tool, answer.text)}
                        ]
                    },
                    None,
                )
            )
        )
    else:
        events += [
            _sse(chunk({"content": piece}, None))
            for piece in re.findall(r"\s*\S+|\s+$", answer.text)
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
                    "service_tier": chat.tier_used,
                    "choices": [],
                    "usage": answer.usage,
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    return tuple(events)
