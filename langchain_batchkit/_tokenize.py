"""Counting a prompt's tokens offline: the model's tokenizer where we have one, else an estimate.

tiktoken downloads its encodings the first time they are used, which fails on
air-gapped machines and in CI (and ``ChatOpenAI.get_num_tokens`` fails with it).
The optional ``tokenizer`` extra installs ``bpe-openai``, whose wheel carries
``o200k_base`` and ``cl100k_base``: OpenAI models are then counted exactly, as
the API bills them (4 tokens a message with its role, and 3 to prime the reply,
as OpenAI's cookbook counts). Everything else, and every model when the extra is missing, is
*estimated* at :data:`CHARS_PER_TOKEN` characters a token, and the count says so
(``exact=False``): an estimate never breaks a run, and it is never passed off as
exact. Images count :data:`IMAGE_TOKENS` each (an estimate too: the real figure
depends on the image's size and ``detail``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage

__all__ = ["CHARS_PER_TOKEN", "IMAGE_TOKENS", "TokenCount", "count_messages", "count_text"]

#: Characters per token assumed where no tokenizer is available (English prose is
#: 4 to 4.5 with OpenAI's encodings, code and other scripts fewer).
CHARS_PER_TOKEN = 4.0
#: Tokens assumed for one image part (OpenAI bills a 512 px high-detail tile 85 + 170).
IMAGE_TOKENS = 255
#: Tokens the chat format adds per message (3 of framing, 1 for the role), and once
#: to prime the reply, as OpenAI's cookbook counts them.
PER_MESSAGE = 4
REPLY_PRIMING = 3

_O200K = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-6", "o1", "o3", "o4", "chatgpt-")
_CL100K = ("gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada-002")


@dataclass(frozen=True, slots=True)
class TokenCount:
    """Tokens counted, and whether a tokenizer counted them (``exact``) or they are estimated."""

    tokens: int
    exact: bool

    def __add__(self, other: TokenCount) -> TokenCount:
        return TokenCount(self.tokens + other.tokens, self.exact and other.exact)


def count_text(text: str, model: str | None) -> TokenCount:
    """The tokens of ``text`` for ``model``.

    Example:
        >>> count_text("x" * 40, "some-local-model")
        TokenCount(tokens=10, exact=False)
    """
    encoding = _encoding_for(model)
    if encoding is not None:
        try:
            return TokenCount(len(encoding.encode_ordinary(text)), True)
        except Exception:
            pass
    return TokenCount(math.ceil(len(text) / CHARS_PER_TOKEN), False)


def count_messages(messages: Sequence[BaseMessage], model: str | None) -> TokenCount:
    """The prompt tokens of a chat request, as the provider counts them (or an estimate)."""
    total = TokenCount(REPLY_PRIMING, True)
    for message in messages:
        total += TokenCount(PER_MESSAGE, True)
        for part in _parts(message.content):
            if isinstance(part, str):
                total += count_text(part, model)
            elif isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                total += TokenCount(IMAGE_TOKENS, False)
            elif isinstance(part, dict):
                total += count_text(str(part.get("text", "")), model)
    if _encoding_for(model) is None:
        return TokenCount(total.tokens, False)
    return total


def tokenizer_for(model: str | None) -> str | None:
    """The name of the offline encoding used for ``model``, or ``None`` (estimated)."""
    encoding = _encoding_for(model)
    return None if encoding is None else str(encoding.name)


def _parts(content: Any) -> list[Any]:
    return [content] if isinstance(content, str) else list(content or ())


@functools.lru_cache(maxsize=64)
def _encoding_for(model: str | None) -> Any:
    if not model:
        return None
    try:
        import bpe_openai
    except ImportError:
        return None
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(_O200K):
        encoding = "o200k_base"
    elif name.startswith(_CL100K):
        encoding = "cl100k_base"
    else:
        try:
            encoding = bpe_openai.encoding_name_for_model(name)
        except Exception:
            return None
    try:
        return bpe_openai.get_encoding(encoding)
    except Exception:
        return None
