"""Packing texts into embedding requests by count and by tokens; pure, no I/O.

A provider caps an embeddings request twice: inputs per request and tokens per
request (OpenAI: 2,048 inputs and 300,000 tokens), and each input on its own
(8,191 tokens for ``text-embedding-3-*``). Texts are counted offline
(:mod:`~langchain_batchkit._tokenize`: exact with ``bpe-openai``, else an estimate),
and a text over the per-input limit is that text's error, or cut to fit when the
user asks, or cut into chunks that each fit (``embed_texts`` averages their
vectors back into one), before it is packed, so it never fails the request it
would share.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from langchain_batchkit import _tokenize
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._validate import check_int

__all__ = ["EmbedLimits", "Packer", "Piece", "TooLong", "cut_text", "fit_text"]

TooLong = Literal["error", "truncate", "split"]

#: Where a text is cut by characters (no tokenizer for the model), chunks hold this
#: share of the limit at :data:`~._tokenize.CHARS_PER_TOKEN`: the estimate may be low.
SPLIT_MARGIN = 0.8

#: Model name prefixes with OpenAI's embedding limits.
_OPENAI_EMBEDDING_MODELS = ("text-embedding-3", "text-embedding-ada-002")


@dataclass(frozen=True, slots=True)
class EmbedLimits:
    """How texts are packed into requests, and what a text over the input limit becomes.

    Args:
        max_inputs: texts per request at most.
        max_request_tokens: tokens per request at most (``None``: no cap).
        max_input_tokens: tokens in one text at most (``None``: no cap).
        too_long: ``"error"``: such a text fails on its own (its neighbours are
            embedded); ``"truncate"``: it is cut to ``max_input_tokens`` (by the
            model's tokenizer when there is one, else by characters at 4 a token);
            ``"split"``: it is cut into chunks that each fit (on token boundaries, or
            by characters with a 20% margin), the chunks are embedded, and the
            text's vector is their token-weighted mean at unit length (OpenAI's
            recipe for long inputs). Only :func:`~langchain_batchkit.embed_texts`
            splits; elsewhere such a text is its error.

    :meth:`for_model` knows OpenAI's limits; other models get 96 texts a request
    (what Cohere and Vertex AI accept) and no token caps.

    Example:
        >>> EmbedLimits.for_model("text-embedding-3-small").max_request_tokens
        300000
    """

    max_inputs: int = 2048
    max_request_tokens: int | None = 300_000
    max_input_tokens: int | None = 8191
    too_long: TooLong = "error"

    def __post_init__(self) -> None:
        check_int("max_inputs", self.max_inputs)
        for name in ("max_request_tokens", "max_input_tokens"):
            value = getattr(self, name)
            if value is not None:
                check_int(name, value)
        if self.too_long not in ("error", "truncate", "split"):
            raise ConfigurationError(
                f"too_long must be 'error', 'truncate' or 'split', got {self.too_long!r}"
            )
        if self.too_long != "error" and self.max_input_tokens is None:
            raise ConfigurationError(f"too_long={self.too_long!r} needs max_input_tokens")

    @classmethod
    def for_model(cls, model: str | None, *, too_long: TooLong = "error") -> EmbedLimits:
        """The provider's limits for ``model`` (OpenAI's), or cautious defaults."""
        name = (model or "").lower().rsplit("/", 1)[-1]
        if name.startswith(_OPENAI_EMBEDDING_MODELS):
            return cls(too_long=too_long)
        if too_long != "error":
            raise ConfigurationError(
                f"too_long={too_long!r} needs the input limit of {model!r}: pass "
                f"limits=EmbedLimits(max_input_tokens=..., too_long={too_long!r})"
            )
        return cls(max_inputs=96, max_request_tokens=None, max_input_tokens=None)


@dataclass(frozen=True, slots=True)
class Piece:
    """One text to embed, keyed from the moment it is read.

    ``metadata`` is the record's (a ``Document``'s, or a mapping's other fields),
    kept only when ``into=`` needs it. ``chunk``: this is one chunk of a text split
    to fit the input limit (its index and key are the text's).
    """

    index: int
    key: str
    text: str
    tokens: int
    metadata: Mapping[str, Any] | None = None
    chunk: bool = False


def cut_text(text: str, model: str | None, limits: EmbedLimits) -> list[tuple[str, int]] | str:
    """``[(text, tokens), ...]`` ready to pack, or the reason the text cannot be sent.

    One pair for a text that fits (or is truncated to fit); one per chunk for a text
    ``too_long="split"`` cuts. The chunks, joined, are the text.

    Example:
        >>> cut_text("x" * 40, "local", EmbedLimits(max_input_tokens=5))
        'the text has 10 tokens, over the model input limit of 5'
        >>> cut_text("x" * 40, "local", EmbedLimits(max_input_tokens=5, too_long="truncate"))
        [('xxxxxxxxxxxxxxxxxxxx', 5)]
        >>> [t for t, _ in cut_text("x" * 40, "local", EmbedLimits(max_input_tokens=5,
        ...                                                       too_long="split"))]
        ['xxxxxxxxxxxxxxxx', 'xxxxxxxxxxxxxxxx', 'xxxxxxxx']
    """
    if not text:
        return "the text is empty (the API refuses empty inputs)"
    tokens = _tokenize.count_text(text, model).tokens
    limit = limits.max_input_tokens
    if limit is None or tokens <= limit:
        return [(text, tokens)]
    if limits.too_long == "error":
        return f"the text has {tokens} tokens, over the model input limit of {limit}"
    if limits.too_long == "truncate":
        chunks = [_truncated(text, model, limit)]
    else:
        chunks = _chunks(text, model, limit)
    return [(chunk, _tokenize.count_text(chunk, model).tokens) for chunk in chunks]


def fit_text(text: str, model: str | None, limits: EmbedLimits) -> tuple[str, int] | str:
    """``(text, tokens)`` ready to pack, or the reason the text cannot be sent.

    For callers that send one input per text: a text ``too_long="split"`` would
    cut is refused here.

    Example:
        >>> fit_text("x" * 40, "local", EmbedLimits(max_input_tokens=5))
        'the text has 10 tokens, over the model input limit of 5'
        >>> fit_text("x" * 40, "local", EmbedLimits(max_input_tokens=5, too_long="truncate"))
        ('xxxxxxxxxxxxxxxxxxxx', 5)
    """
    if limits.too_long == "split":
        cut = cut_text(text, model, dataclasses.replace(limits, too_long="error"))
        if isinstance(cut, str) and text:
            return f"{cut} (too_long='split' applies to embed_texts only)"
    else:
        cut = cut_text(text, model, limits)
    return cut if isinstance(cut, str) else cut[0]


def _truncated(text: str, model: str | None, limit: int) -> str:
    encoding = _tokenize._encoding_for(model)
    if encoding is not None:
        return str(encoding.decode(encoding.encode_ordinary(text)[:limit]))
    return text[: math.floor(limit * _tokenize.CHARS_PER_TOKEN)]


def _chunks(text: str, model: str | None, limit: int) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` tokens, on token boundaries when
    the model has a tokenizer (never inside a character), else by characters."""
    encoding = _tokenize._encoding_for(model)
    if encoding is None:
        size = max(1, math.floor(limit * SPLIT_MARGIN * _tokenize.CHARS_PER_TOKEN))
        return [text[i : i + size] for i in range(0, len(text), size)]
    ids = encoding.encode_ordinary(text)
    chunks: list[str] = []
    start, at = 0, 0
    while start < len(ids):
        end = min(start + limit, len(ids))
        chunk = str(encoding.decode(ids[start:end]))
        # A token may hold part of a character's bytes: end the chunk before it.
        while not text.startswith(chunk, at) and end > start + 1:
            end -= 1
            chunk = str(encoding.decode(ids[start:end]))
        while not text.startswith(chunk, at) and end < len(ids):
            end += 1
            chunk = str(encoding.decode(ids[start:end]))
        chunks.append(chunk)
        start, at = end, at + len(chunk)
    return chunks


class Packer:
    """Gathers pieces into requests of at most ``max_inputs`` texts and ``max_tokens`` tokens.

    ``max_tokens`` is the smaller of the request cap and the rate limit's tokens per
    minute (a request above that could never be paced).

    Example:
        >>> packer = Packer(max_inputs=2, max_tokens=None)
        >>> [packer.add(Piece(i, str(i), "t", 1)) for i in range(3)]  # doctest: +ELLIPSIS
        [None, None, [Piece(index=0, ...), Piece(index=1, ...)]]
    """

    __slots__ = ("_open", "_tokens", "max_inputs", "max_tokens")

    def __init__(self, *, max_inputs: int, max_tokens: int | None) -> None:
        self.max_inputs = max_inputs
        self.max_tokens = max_tokens
        self._open: list[Piece] = []
        self._tokens = 0

    def add(self, piece: Piece) -> list[Piece] | None:
        """Take ``piece``; returns the request it closed, if adding it closed one."""
        closed: list[Piece] | None = None
        over_tokens = self.max_tokens is not None and self._tokens + piece.tokens > self.max_tokens
        if self._open and (len(self._open) >= self.max_inputs or over_tokens):
            closed = self.flush()
        self._open.append(piece)
        self._tokens += piece.tokens
        return closed

    def flush(self) -> list[Piece] | None:
        """The open request, if it holds anything."""
        if not self._open:
            return None
        closed, self._open, self._tokens = self._open, [], 0
        return closed

    def full(self) -> bool:
        """Whether the open request takes no more texts."""
        return len(self._open) >= self.max_inputs
