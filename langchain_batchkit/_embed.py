"""``embed_texts`` / ``aembed_texts``: a corpus through any ``Embeddings``, paced, resumable.

The decisions live in :class:`~langchain_batchkit._embed_run.EmbedRun`; this module
holds the public entry points and two thin drivers. The async one runs requests as
tasks on the caller's loop (``aembed_documents``); the sync one runs the model's
own sync path in worker threads (``embed_documents``), as langchain-core's
``batch`` does. Both keep at most ``max_concurrency`` requests in flight, wait for
each request's turn at the :class:`RateLimit`, retry a failed request after the
:class:`RetryPolicy`'s wait, and commit and add to the vector store from the
driver's own thread only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass, field
from typing import Any, ClassVar

from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from langchain_batchkit._embed_paced import (
    PacedEmbeddings,
    acall_paced,
    call_paced,
    handing_over,
    limits_for,
    model_of,
)
from langchain_batchkit._embed_pack import EmbedLimits
from langchain_batchkit._embed_run import AddBatch, EmbedFailure, EmbedRun, Request
from langchain_batchkit._embed_store import EmbeddingStore
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._limits import RateLimit
from langchain_batchkit._prices import Price, PriceBook, as_price_book
from langchain_batchkit._progress import ProgressReporter
from langchain_batchkit._retry import RetryPolicy, clock_of
from langchain_batchkit._validate import check_int

__all__ = ["EmbedFailure", "EmbedReport", "aembed_texts", "embed_texts"]

logger = logging.getLogger(__name__)

Outcome = list[list[float]] | Exception


@dataclass(frozen=True, slots=True)
class EmbedReport:
    """What :func:`embed_texts` returns: counts and the first failures, not every vector.

    The vectors are in :attr:`store` (the checkpoint file, or an in-memory store
    without one): read them by key, or export them in batches.

    Attributes:
        texts: inputs read.
        embedded: texts embedded by this run.
        resumed: texts found in the checkpoint already (not sent again).
        failed: texts that could not be embedded (each its own error).
        added: texts added to the ``into=`` vector store by this run.
        requests: embedding requests sent, retries included.
        retries: requests sent again after a transient error.
        splits: failed requests split in halves to find the texts that failed them.
        tokens: input tokens of the requests that succeeded (counted offline; a
            split text's chunks included).
        cost: dollars for them (``None`` when the model has no known price).
        elapsed: seconds the run took.
        failures: the first :attr:`MAX_FAILURES` failures, in the order they happened.
        store: where every vector went.
    """

    MAX_FAILURES: ClassVar[int] = EmbedRun.MAX_FAILURES

    texts: int
    embedded: int
    resumed: int
    failed: int
    added: int
    requests: int
    retries: int
    splits: int
    tokens: int
    cost: float | None
    elapsed: float
    failures: tuple[EmbedFailure, ...] = field(repr=False)
    store: EmbeddingStore = field(repr=False, compare=False)

    def __str__(self) -> str:
        cost = "" if self.cost is None else f", ${self.cost:.4f}"
        return (
            f"{self.texts} texts: {self.embedded} embedded, {self.resumed} resumed, "
            f"{self.failed} failed, {self.added} added; {self.requests} requests "
            f"({self.retries} retries, {self.splits} splits), {self.tokens} tokens{cost}, "
            f"{self.elapsed:.1f} s"
        )


@dataclass(frozen=True, slots=True)
class _Setup:
    run: EmbedRun
    embeddings: Embeddings
    limit: RateLimit | None
    policy: RetryPolicy
    store: EmbeddingStore
    into: VectorStore | None
    concurrency: int
    progress: ProgressReporter
    started: float


def embed_texts(
    embeddings: Embeddings,
    texts: Iterable[Any],
    *,
    rate_limit: RateLimit | None = None,
    checkpoint: str | None = None,
    key: Callable[[Any], object] | None = None,
    text: Callable[[Any], str] | None = None,
    into: VectorStore | None = None,
    limits: EmbedLimits | None = None,
    retry: RetryPolicy | None = None,
    max_concurrency: int = 8,
    add_batch_size: int = 256,
    prices: PriceBook | Mapping[str, Price] | None = None,
    progress: bool | None = None,
) -> EmbedReport:
    """Embed every text of ``texts`` with ``embeddings``: a vector or an error per text.

    Texts are read lazily and packed into requests by count and tokens
    (:class:`EmbedLimits`); a text over the model's input limit fails alone, or is
    truncated (``limits=EmbedLimits.for_model(model, too_long="truncate")``), or is
    split (``too_long="split"``) into chunks that fit, packed like any text, whose
    vectors are averaged by tokens and normalised into the text's one vector (its
    tokens and cost are the chunks' sum; a failed chunk fails the text). A request
    that fails for good is split in halves until the texts that fail it are found.
    Each request waits for its turn at ``rate_limit`` (RPM, and TPM by its input
    tokens counted offline) and is retried by ``retry`` on transient errors. Vectors go to the
    ``checkpoint`` as they finish, so a run started again with the same file sends
    only what is missing; memory stays flat however many texts there are.

    Args:
        embeddings: any LangChain ``Embeddings`` (a :func:`paced_embeddings` wrapper
            is unwrapped, its limiter used). For OpenAI pass ``max_retries=0`` (retries
            are ours) and ``check_embedding_ctx_length=False`` (tiktoken would download
            its encodings; we count tokens offline with ``bpe-openai``).
        texts: an iterable of strings, ``Document``\\ s, or mappings with a ``"text"``.
        rate_limit: the limiter every request enters (share it with other kits).
        checkpoint: a SQLite file for vectors, resumed by key; ``None`` keeps them
            in memory.
        key: a record's stable, unique key (default: its position in ``texts``); the
            vector store ids too.
        text: a record's text, when it is not a str, ``Document`` or ``{"text": ...}``.
        into: a vector store to add every embedded text to, ``add_batch_size`` at a
            time, effectively once across crashes: ids are the keys, and a resumed
            run adds only what was not added. A store built on a
            :func:`paced_embeddings` wrapper is handed the vectors; any other store
            embeds the texts again itself.
        limits: request packing, and what a text over the input limit becomes
            (default: the model's own limits; a text too long is its error).
        retry: how failed requests are retried (default ``RetryPolicy()``).
        max_concurrency: requests in flight at most.
        add_batch_size: texts per vector store ``add_documents`` call.
        prices: prices for models the database lacks.
        progress: show a bar counting texts (default: for 10 texts or more).

    Returns:
        An :class:`EmbedReport`; the vectors are in ``report.store``.

    Example:
        >>> report = embed_texts(
        ...     OpenAIEmbeddings(model="text-embedding-3-small", max_retries=0,
        ...                      check_embedding_ctx_length=False),
        ...     read_chunks("corpus.jsonl"), key=lambda c: c["id"],
        ...     rate_limit=RateLimit(requests_per_minute=3000, tokens_per_minute=1_000_000),
        ...     checkpoint="embed.sqlite", into=vectorstore,
        ... )  # doctest: +SKIP
        >>> report.store.to_parquet("vectors.parquet")  # doctest: +SKIP
    """
    setup = _set_up(**locals())
    try:
        _drive_sync(setup)
    finally:
        setup.progress.close()
    return _report(setup)


async def aembed_texts(
    embeddings: Embeddings,
    texts: Iterable[Any],
    *,
    rate_limit: RateLimit | None = None,
    checkpoint: str | None = None,
    key: Callable[[Any], object] | None = None,
    text: Callable[[Any], str] | None = None,
    into: VectorStore | None = None,
    limits: EmbedLimits | None = None,
    retry: RetryPolicy | None = None,
    max_concurrency: int = 8,
    add_batch_size: int = 256,
    prices: PriceBook | Mapping[str, Price] | None = None,
    progress: bool | None = None,
) -> EmbedReport:
    """The async twin of :func:`embed_texts`: requests run on the caller's event loop.

    Example:
        >>> report = await aembed_texts(embeddings, chunks, checkpoint="e.sqlite")  # doctest: +SKIP
    """
    setup = _set_up(**locals())
    try:
        await _drive_async(setup)
    finally:
        setup.progress.close()
    return _report(setup)


def _set_up(
    *,
    embeddings: Embeddings,
    texts: Iterable[Any],
    rate_limit: RateLimit | None,
    checkpoint: str | None,
    key: Callable[[Any], object] | None,
    text: Callable[[Any], str] | None,
    into: VectorStore | None,
    limits: EmbedLimits | None,
    retry: RetryPolicy | None,
    max_concurrency: int,
    add_batch_size: int,
    prices: PriceBook | Mapping[str, Price] | None,
    progress: bool | None,
) -> _Setup:
    if isinstance(embeddings, PacedEmbeddings):
        rate_limit = rate_limit if rate_limit is not None else embeddings.rate_limit
        limits = limits or embeddings.limits
        model: str | None = embeddings.model
        embeddings = embeddings.embeddings
    elif isinstance(embeddings, Embeddings):
        model = model_of(embeddings)
    else:
        raise ConfigurationError(
            f"embed_texts needs a LangChain Embeddings, got {type(embeddings).__name__}"
        )
    if into is not None and not isinstance(into, VectorStore):
        raise ConfigurationError(
            f"into= must be a LangChain VectorStore, got {type(into).__name__}"
        )
    if into is not None and not isinstance(getattr(into, "embeddings", None), PacedEmbeddings):
        logger.warning(
            "the into= vector store embeds what it is given with its own embeddings; build "
            "it on paced_embeddings(...) to hand it the vectors embed_texts computed instead"
        )
    check_int("max_concurrency", max_concurrency)
    check_int("add_batch_size", add_batch_size)
    limits = limits_for(embeddings, model, limits)
    cap = limits.max_request_tokens
    tpm = rate_limit.tokens_per_minute if rate_limit is not None else None
    if tpm is not None:
        cap = int(tpm) if cap is None else min(cap, int(tpm))
    policy = retry or RetryPolicy()
    clock = clock_of(policy)
    store = EmbeddingStore(checkpoint or ":memory:")
    store.bind(model)
    total = len(texts) if isinstance(texts, Sized) else None
    reporter = ProgressReporter(total, show_bar=progress, callback=None, desc="embed", unit="text")
    provider = "openai" if type(embeddings).__module__.startswith("langchain_openai") else None
    run = EmbedRun(
        texts,
        store=store,
        model=model,
        limits=limits,
        max_request_tokens=cap,
        key=key,
        text=text,
        policy=policy,
        clock=clock,
        prices=as_price_book(prices),
        provider=provider,
        progress=reporter,
        into=into is not None,
        add_batch_size=add_batch_size,
    )
    return _Setup(
        run,
        embeddings,
        rate_limit,
        policy,
        store,
        into,
        max_concurrency,
        reporter,
        time.monotonic(),
    )


def _drive_sync(setup: _Setup) -> None:
    run, clock = setup.run, clock_of(setup.policy)

    def attempt(request: Request) -> Outcome:
        while True:
            try:
                return call_paced(setup.embeddings, setup.limit, request.texts, request.tokens)
            except Exception as exc:
                delay = run.retry_delay(request, exc)
                if delay is None:
                    return exc
                clock.sleep_sync(delay)

    def add(batches: list[AddBatch]) -> None:
        for batch in batches:
            assert setup.into is not None
            with handing_over(dict(zip(batch.texts, batch.vectors, strict=True))):
                setup.into.add_documents(batch.documents(), ids=batch.keys)
            run.added(batch)

    with concurrent.futures.ThreadPoolExecutor(setup.concurrency, "embed") as pool:
        running: dict[concurrent.futures.Future[Outcome], Request] = {}
        try:
            add(run.due_adds(final=False))
            while True:
                while len(running) < setup.concurrency and (request := run.next_request()):
                    running[pool.submit(attempt, request)] = request
                if not running:
                    break
                done, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    add(run.settle(running.pop(future), future.result()))
            add(run.due_adds(final=True))
        finally:
            for future in running:
                future.cancel()


async def _drive_async(setup: _Setup) -> None:
    run, clock = setup.run, clock_of(setup.policy)

    async def attempt(request: Request) -> Outcome:
        while True:
            try:
                return await acall_paced(
                    setup.embeddings, setup.limit, request.texts, request.tokens
                )
            except Exception as exc:
                delay = run.retry_delay(request, exc)
                if delay is None:
                    return exc
                await clock.sleep(delay)

    async def add(batches: list[AddBatch]) -> None:
        for batch in batches:
            assert setup.into is not None
            with handing_over(dict(zip(batch.texts, batch.vectors, strict=True))):
                await setup.into.aadd_documents(batch.documents(), ids=batch.keys)
            run.added(batch)

    running: dict[asyncio.Task[Outcome], Request] = {}
    try:
        await add(run.due_adds(final=False))
        while True:
            while len(running) < setup.concurrency and (request := run.next_request()):
                running[asyncio.ensure_future(attempt(request))] = request
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                await add(run.settle(running.pop(task), task.result()))
        await add(run.due_adds(final=True))
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


def _report(setup: _Setup) -> EmbedReport:
    c = setup.run.counts
    return EmbedReport(
        texts=c.texts,
        embedded=c.embedded,
        resumed=c.resumed,
        failed=c.failed,
        added=c.added,
        requests=c.requests,
        retries=c.retries,
        splits=c.splits,
        tokens=c.tokens,
        cost=c.cost,
        elapsed=time.monotonic() - setup.started,
        failures=tuple(c.failures),
        store=setup.store,
    )
