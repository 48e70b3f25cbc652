"""Pacing embedding requests through a :class:`RateLimit`, and an ``Embeddings`` that does it.

A chat model's requests reach a :class:`RateLimit` through LangChain's callbacks;
an ``Embeddings`` fires none, so nothing paced it. Here every embeddings request
enters the limiter with its input tokens, counted offline, before it is sent, and
leaves it with how it ended (a 429 pauses every request sharing the limiter). The
count is the one :mod:`~langchain_batchkit._tokenize` makes: exact for OpenAI models
with ``bpe-openai``, which is what the provider bills, since LangChain's
``Embeddings`` interface drops the usage the API reports.

:class:`PacedEmbeddings` wraps any ``Embeddings`` so that calls made directly, in a
``RunnableLambda`` step or by a vector store are paced too, packed into requests
that fit the model's limits.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from uuid import uuid4

from langchain_core.embeddings import Embeddings

from langchain_batchkit import _tokenize
from langchain_batchkit._embed_pack import EmbedLimits, fit_text
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._limits import RateLimit
from langchain_batchkit._retry import is_transient

__all__ = [
    "PacedEmbeddings",
    "acall_paced",
    "call_paced",
    "handing_over",
    "limits_for",
    "model_of",
    "paced_embeddings",
]

Vectors = list[list[float]]
#: One vector or one error per text, in order (what a MicroBatcher hands its callers).
Each = list[list[float] | Exception]

#: Vectors already computed for texts a vector store is about to embed again.
_HANDOVER: ContextVar[Mapping[str, list[float]] | None] = ContextVar(
    "langchain_batchkit_embed_handover", default=None
)


def model_of(embeddings: Embeddings) -> str | None:
    """The model name an ``Embeddings`` carries (``model`` or ``model_name``), if any."""
    for name in ("model", "model_name", "model_id"):
        value = getattr(embeddings, name, None)
        if isinstance(value, str) and value:
            return value
    return None


def limits_for(
    embeddings: Embeddings, model: str | None, limits: EmbedLimits | None
) -> EmbedLimits:
    """``limits`` (default: the model's), with no more inputs a request than the client
    sends in one (``OpenAIEmbeddings.chunk_size``), so one request is one HTTP call."""
    limits = limits or EmbedLimits.for_model(model)
    chunk = getattr(embeddings, "chunk_size", None)
    if isinstance(chunk, int) and not isinstance(chunk, bool) and 0 < chunk < limits.max_inputs:
        limits = dataclasses.replace(limits, max_inputs=chunk)
    return limits


def call_paced(
    embeddings: Embeddings, limit: RateLimit | None, texts: list[str], tokens: int
) -> Vectors:
    """One request: wait for its turn, send it, report how it ended (blocking)."""
    if limit is None:
        return _checked(embeddings.embed_documents(texts), texts)
    run_id = uuid4()
    limit.enter_sync(run_id, tokens)
    try:
        vectors = embeddings.embed_documents(texts)
    except BaseException as exc:
        limit.exit(run_id, error=exc)
        raise
    limit.exit(run_id, used_tokens=tokens)
    return _checked(vectors, texts)


async def acall_paced(
    embeddings: Embeddings, limit: RateLimit | None, texts: list[str], tokens: int
) -> Vectors:
    """The async twin of :func:`call_paced`."""
    if limit is None:
        return _checked(await embeddings.aembed_documents(texts), texts)
    run_id = uuid4()
    await limit.enter(run_id, tokens)
    try:
        vectors = await embeddings.aembed_documents(texts)
    except BaseException as exc:
        limit.exit(run_id, error=exc)
        raise
    limit.exit(run_id, used_tokens=tokens)
    return _checked(vectors, texts)


def _checked(vectors: Sequence[Sequence[float]], texts: list[str]) -> Vectors:
    if len(vectors) != len(texts):
        raise ValueError(
            f"the embeddings model returned {len(vectors)} vectors for {len(texts)} texts"
        )
    return [list(v) for v in vectors]


@contextlib.contextmanager
def handing_over(vectors: Mapping[str, list[float]]) -> Iterator[None]:
    """While inside, a :class:`PacedEmbeddings` asked for exactly these texts answers
    with these vectors instead of calling its model (a vector store re-embedding what
    :func:`~langchain_batchkit.embed_texts` has just embedded)."""
    token = _HANDOVER.set(vectors)
    try:
        yield
    finally:
        _HANDOVER.reset(token)


class PacedEmbeddings(Embeddings):
    """An ``Embeddings`` whose every request waits for a :class:`RateLimit` first.

    Texts are packed into requests by :class:`EmbedLimits` (count and tokens), and
    each request enters the limiter with its tokens, counted offline. Build it with
    :func:`paced_embeddings`.

    Example:
        >>> paced = paced_embeddings(OpenAIEmbeddings(), limit)     # doctest: +SKIP
        >>> store = InMemoryVectorStore(paced)                      # doctest: +SKIP
    """

    def __init__(
        self,
        embeddings: Embeddings,
        rate_limit: RateLimit | None,
        *,
        limits: EmbedLimits | None = None,
        model: str | None = None,
    ) -> None:
        if not isinstance(embeddings, Embeddings):
            raise ConfigurationError(
                f"paced_embeddings needs a LangChain Embeddings, got {type(embeddings).__name__}"
            )
        if isinstance(embeddings, PacedEmbeddings):
            raise ConfigurationError("these embeddings are paced already")
        self.embeddings = embeddings
        self.rate_limit = rate_limit
        self.model = model or model_of(embeddings)
        self.limits = limits_for(embeddings, self.model, limits)

    def __repr__(self) -> str:
        return f"PacedEmbeddings({self.embeddings!r}, model={self.model!r})"

    def embed_documents(self, texts: list[str]) -> Vectors:
        """Embed ``texts``, a paced request per packed group."""
        handed = self._handed_over(texts)
        if handed is not None:
            return handed
        out: Vectors = []
        for group, tokens in self._requests(texts):
            out += call_paced(self.embeddings, self.rate_limit, group, tokens)
        return out

    async def aembed_documents(self, texts: list[str]) -> Vectors:
        """The async twin of :meth:`embed_documents`."""
        handed = self._handed_over(texts)
        if handed is not None:
            return handed
        out: Vectors = []
        for group, tokens in self._requests(texts):
            out += await acall_paced(self.embeddings, self.rate_limit, group, tokens)
        return out

    def embed_each(self, texts: list[str]) -> Each:
        """Embed ``texts``, paced, with a vector *or an error* per text.

        The batch function of a :class:`~langchain_batchkit.MicroBatcher` whose callers
        each send one text: a text that is empty or over the model's input limit gets
        its own error without a request, and a request the provider refuses for good
        (a 400) is split in halves until the texts that fail it are found, so one bad
        text never fails its neighbours. A transient error (429, 5xx) fails every text
        of its request: the callers retry. ``too_long="split"`` does not apply here
        (only :func:`~langchain_batchkit.embed_texts` splits): such a text is its error.

        Example:
            >>> batcher = MicroBatcher(paced.aembed_each, max_batch_size=256)  # doctest: +SKIP
            >>> vector = await batcher.ainvoke("one text")                     # doctest: +SKIP
        """
        out, sendable, texts = self._checked_texts(texts)
        for group, _ in self._requests([texts[i] for i in sendable]):
            positions, sendable = sendable[: len(group)], sendable[len(group) :]
            self._settle_each(out, positions, texts, self.embed_documents)
        return out

    async def aembed_each(self, texts: list[str]) -> Each:
        """The async twin of :meth:`embed_each`."""
        out, sendable, texts = self._checked_texts(texts)
        for group, _ in self._requests([texts[i] for i in sendable]):
            positions, sendable = sendable[: len(group)], sendable[len(group) :]
            halves = [positions]
            while halves:
                part = halves.pop()
                try:
                    vectors = await self.aembed_documents([texts[i] for i in part])
                except Exception as exc:
                    halves += _split_or_fail(out, part, exc)
                    continue
                for i, vector in zip(part, vectors, strict=True):
                    out[i] = vector
        return out

    def _checked_texts(self, texts: list[str]) -> tuple[Each, list[int], list[str]]:
        """A slot per text (its error when it cannot be sent), the positions to send,
        and the texts as sent (cut to fit when ``limits.too_long == "truncate"``)."""
        out: Each = [ValueError("not embedded")] * len(texts)
        sendable, fitted_texts = [], list(texts)
        for i, text in enumerate(texts):
            fitted = fit_text(text, self.model, self.limits) if isinstance(text, str) else None
            if isinstance(fitted, tuple):
                sendable.append(i)
                fitted_texts[i] = fitted[0]
            else:
                out[i] = ValueError(f"cannot embed this text: {fitted or 'it is not a str'}")
        return out, sendable, fitted_texts

    def _settle_each(
        self,
        out: Each,
        positions: list[int],
        texts: list[str],
        embed: Callable[[list[str]], Vectors],
    ) -> None:
        halves = [positions]
        while halves:
            part = halves.pop()
            try:
                vectors = embed([texts[i] for i in part])
            except Exception as exc:
                halves += _split_or_fail(out, part, exc)
                continue
            for i, vector in zip(part, vectors, strict=True):
                out[i] = vector

    def embed_query(self, text: str) -> list[float]:
        """Embed one query, paced (through the model's own ``embed_query``)."""
        tokens = self._count(text)
        if self.rate_limit is None:
            return self.embeddings.embed_query(text)
        run_id = uuid4()
        self.rate_limit.enter_sync(run_id, tokens)
        try:
            vector = self.embeddings.embed_query(text)
        except BaseException as exc:
            self.rate_limit.exit(run_id, error=exc)
            raise
        self.rate_limit.exit(run_id, used_tokens=tokens)
        return vector

    async def aembed_query(self, text: str) -> list[float]:
        """The async twin of :meth:`embed_query`."""
        tokens = self._count(text)
        if self.rate_limit is None:
            return await self.embeddings.aembed_query(text)
        run_id = uuid4()
        await self.rate_limit.enter(run_id, tokens)
        try:
            vector = await self.embeddings.aembed_query(text)
        except BaseException as exc:
            self.rate_limit.exit(run_id, error=exc)
            raise
        self.rate_limit.exit(run_id, used_tokens=tokens)
        return vector

    def _count(self, text: str) -> int:
        return _tokenize.count_text(text, self.model).tokens

    def _requests(self, texts: list[str]) -> Iterator[tuple[list[str], int]]:
        cap = self.limits.max_request_tokens
        tpm = self.rate_limit.tokens_per_minute if self.rate_limit is not None else None
        if tpm is not None:
            cap = int(tpm) if cap is None else min(cap, int(tpm))
        group: list[str] = []
        tokens = 0
        for text in texts:
            count = self._count(text)
            full = len(group) >= self.limits.max_inputs
            if group and (full or (cap is not None and tokens + count > cap)):
                yield group, tokens
                group, tokens = [], 0
            group.append(text)
            tokens += count
        if group:
            yield group, tokens

    def _handed_over(self, texts: list[str]) -> Vectors | None:
        known = _HANDOVER.get()
        if known is None or not all(t in known for t in texts):
            return None
        return [known[t] for t in texts]


def _split_or_fail(out: Each, part: list[int], exc: Exception) -> list[list[int]]:
    """The halves of a refused request to send again, or its texts failed with ``exc``."""
    if len(part) > 1 and not is_transient(exc):
        half = len(part) // 2
        return [part[half:], part[:half]]
    for i in part:
        out[i] = exc
    return []


def paced_embeddings(
    embeddings: Embeddings,
    rate_limit: RateLimit | None,
    *,
    limits: EmbedLimits | None = None,
    model: str | None = None,
) -> PacedEmbeddings:
    """``embeddings`` with every request paced by ``rate_limit`` (RPM and TPM).

    Use it wherever the model is called outside :func:`~langchain_batchkit.embed_texts`:
    directly, as a ``RunnableLambda`` step, or as a vector store's embedding (give the
    same limiter to the chat model's kit to share one budget).

    Args:
        embeddings: any LangChain ``Embeddings`` (for OpenAI, ``max_retries=0`` leaves
            retries to the caller, and ``check_embedding_ctx_length=False`` keeps
            tiktoken from downloading its encodings).
        rate_limit: the limiter every request enters, with its input tokens.
        limits: how texts are packed into requests (default: the model's own limits).
        model: the model name for counting tokens (default: read from ``embeddings``).

    Example:
        >>> limit = RateLimit(requests_per_minute=3000, tokens_per_minute=1_000_000)
        >>> paced = paced_embeddings(OpenAIEmbeddings(), limit)  # doctest: +SKIP
        >>> RunnableLambda(paced.embed_documents).batch(chunks)  # doctest: +SKIP
    """
    return PacedEmbeddings(embeddings, rate_limit, limits=limits, model=model)
