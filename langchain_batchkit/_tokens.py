"""What a model request costs in tokens, estimated before it is sent.

A rate limit with a ``tokens_per_minute`` budget reserves a request's tokens before
it goes out, so it needs an estimate then; the response's usage corrects it after.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage

__all__ = ["DEFAULT_COMPLETION_TOKENS", "IMAGE_TOKENS", "TokenEstimator", "estimate_tokens"]

TokenEstimator = Callable[[Sequence[BaseMessage], Mapping[str, Any]], int]

#: Completion tokens assumed for a request that sets no ``max_tokens``.
DEFAULT_COMPLETION_TOKENS = 256
#: Tokens assumed for an image part (OpenAI's high-detail tile cost is 85 + 170 per tile).
IMAGE_TOKENS = 765


def estimate_tokens(messages: Sequence[BaseMessage], invocation_params: Mapping[str, Any]) -> int:
    """A cheap upper-leaning estimate of a request's tokens, as providers count them.

    About four characters a token for text, a few tokens per message, a fixed
    cost per image, plus ``max_tokens`` (or :data:`DEFAULT_COMPLETION_TOKENS`)
    for the answer: providers count the requested completion against the
    per-minute token limit when the request arrives. It is corrected from the
    response's usage afterwards.
    """
    total = 3
    for message in messages:
        total += 4
        content = message.content
        if isinstance(content, str):
            total += len(content) // 4 + 1
            continue
        for part in content:
            if isinstance(part, str):
                total += len(part) // 4 + 1
            elif isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                total += IMAGE_TOKENS
            elif isinstance(part, dict):
                total += len(str(part.get("text", ""))) // 4 + 1
    completion = (
        invocation_params.get("max_completion_tokens")
        or invocation_params.get("max_tokens")
        or DEFAULT_COMPLETION_TOKENS
    )
    return total + int(completion)
