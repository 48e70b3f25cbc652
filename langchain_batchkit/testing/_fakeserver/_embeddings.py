"""``POST /v1/embeddings``: what a request means, its vectors and its usage.

Vectors are deterministic: each input's vector is drawn from SHAKE-256 of its text
(so a test can recompute it with :func:`fake_vector`) and scaled to unit length, as
OpenAI's are. ``dimensions`` is honoured; without it a request gets
``FakeServerConfig.embedding_dimensions``. ``encoding_format="base64"`` (what the
``openai`` SDK asks for by default) answers little-endian float32 bytes in base64.

The real API's request limits are enforced with its 400s: at most
:data:`MAX_INPUTS` inputs, :data:`MAX_INPUT_TOKENS` tokens in any one input and
:data:`MAX_REQUEST_TOKENS` in the request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from langchain_batchkit import _tokenize
from langchain_batchkit.testing._fakeserver._config import FakeServerConfig, TokenCounting
from langchain_batchkit.testing._fakeserver._exchange import InvalidRequest

__all__ = [
    "MAX_INPUTS",
    "MAX_INPUT_TOKENS",
    "MAX_REQUEST_TOKENS",
    "EmbeddingRequest",
    "check_inputs_not_rejected",
    "count_input",
    "embedding_object",
    "fake_vector",
    "parse_embedding_body",
]

MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8191
MAX_REQUEST_TOKENS = 300_000

EncodingFormat = Literal["float", "base64"]


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A parsed embeddings request: texts (token arrays as their digits) and token counts."""

    model: str
    inputs: tuple[str, ...]
    tokens: tuple[int, ...]
    dimensions: int | None
    encoding_format: EncodingFormat

    @property
    def prompt(self) -> str:
        """All inputs in one string, for ``reject_prompts`` and the fault script."""
        return "\n".join(self.inputs)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


def count_input(text: str, model: str, tokenizer: TokenCounting) -> int:
    """One input's tokens, counted as ``FakeServerConfig.tokenizer`` says (no framing)."""
    if tokenizer == "chars":
        return math.ceil(len(text) / 4)
    return _tokenize.count_text(text, model).tokens


def parse_embedding_body(body: bytes, config: FakeServerConfig) -> EmbeddingRequest:
    """Parse and check a body; raises :class:`InvalidRequest` where the real API answers 400."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest("We could not parse the JSON body of your request.") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", param="model")
    texts, tokens = _inputs(payload.get("input"), model, config.tokenizer)
    dimensions = payload.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise InvalidRequest(f"Invalid dimensions: {dimensions!r}.", param="dimensions")
    encoding = payload.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidRequest(
            f"Invalid encoding_format: {encoding!r}; expected 'float' or 'base64'.",
            param="encoding_format",
        )
    request = EmbeddingRequest(model, texts, tokens, dimensions, encoding)
    _check_limits(request)
    return request


def _inputs(
    value: object, model: str, tokenizer: TokenCounting
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    items: Sequence[object]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        items = [value]  # one input given as token ids
    elif isinstance(value, list) and value:
        items = value
    else:
        raise InvalidRequest(
            "'input' must be a non-empty string, array of strings or array of token arrays.",
            param="input",
        )
    texts: list[str] = []
    tokens: list[int] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise InvalidRequest(f"'input[{i}]' must not be empty.", param="input")
            texts.append(item)
            tokens.append(count_input(item, model, tokenizer))
        elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
            texts.append(",".join(map(str, item)))
            tokens.append(len(item))
        else:
            raise InvalidRequest(
                f"'input[{i}]' must be a non-empty string or array of token ids.", param="input"
            )
    return tuple(texts), tuple(tokens)


def _check_limits(request: EmbeddingRequest) -> None:
    if len(request.inputs) > MAX_INPUTS:
        raise InvalidRequest(
            f"'input' must have at most {MAX_INPUTS} items, got {len(request.inputs)}.",
            param="input",
        )
    for i, tokens in enumerate(request.tokens):
        if tokens > MAX_INPUT_TOKENS:
            raise InvalidRequest(
                f"This model's maximum context length is {MAX_INPUT_TOKENS + 1} tokens, "
                f"however you requested {tokens} tokens (input[{i}]).",
                param="input",
                code="context_length_exceeded",
            )
    if request.total_tokens > MAX_REQUEST_TOKENS:
        raise InvalidRequest(
            f"Requested {request.total_tokens} tokens, max {MAX_REQUEST_TOKENS} tokens "
            "per request.",
            param="input",
            code="max_tokens_per_request",
        )


def check_inputs_not_rejected(inputs: Sequence[str], config: FakeServerConfig) -> None:
    """Raise the 400 a request gets when any input contains one of ``reject_prompts``."""
    for i, text in enumerate(inputs):
        rejected = sorted(s for s in config.reject_prompts if s in text)
        if rejected:
            raise InvalidRequest(
                f"input[{i}] was rejected by the fake server (reject_prompts: {rejected[0]!r}).",
                code="rejected_prompt",
                param="input",
            )


def fake_vector(text: str, dimensions: int) -> list[float]:
    """The unit vector the fake server answers for ``text`` (deterministic).

    Example:
        >>> len(fake_vector("hello", 8)), round(sum(x * x for x in fake_vector("hello", 8)), 6)
        (8, 1.0)
    """
    raw = hashlib.shake_256(text.encode("utf-8")).digest(2 * dimensions)
    values = [v / 32768.0 for v in struct.unpack(f"<{dimensions}h", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def embedding_object(request: EmbeddingRequest, config: FakeServerConfig) -> dict[str, object]:
    """The 200 body: one ``embedding`` per input, in order, and the usage."""
    dims = request.dimensions or config.embedding_dimensions
    data: list[dict[str, object]] = []
    for index, text in enumerate(request.inputs):
        vector = fake_vector(text, dims)
        encoded: object = vector
        if request.encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    total = request.total_tokens
    return {
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }
