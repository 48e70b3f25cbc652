"""BatchEmbeddings: a corpus embedded through OpenAI's Batch API, at half price.

Each text is one request line (``{"model", "input": [text], "encoding_format":
"base64"}``, plus ``dimensions`` when the model sets it), its ``custom_id`` its input
index. One line per text, not one per packed request: OpenAI caps an embeddings
batch at 50,000 *inputs* as well as 50,000 lines, so packing would not put more
texts in a job; and a text the provider refuses then fails alone, with its own
usage and price. The jobs are the chat runner's (:func:`drive_jobs`): split at
``max_requests_per_job``/``max_bytes_per_job``, polled with backoff, errored or
expired lines resubmitted, state in ``state_path`` so a restarted process resumes
polling the jobs it already paid for, and :meth:`BatchEmbeddings.cancel`.

Vectors go to the :class:`EmbeddingStore` as each job is collected, before the state
file records the line as done, so a crash between the two only collects the job
again. The state file keeps each line's usage, never its vector. Texts whose key is
in the store already are not sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.embeddings import Embeddings

from langchain_batchkit._batch_api._drive import JobControl, drive_jobs
from langchain_batchkit._batch_api._options import BatchAPIOptions
from langchain_batchkit._batch_api._private_loop import run_on_private_loop
from langchain_batchkit._batch_api._provider import OpenAIBatches
from langchain_batchkit._batch_api._requests import PreparedRequest
from langchain_batchkit._batch_api._rounds import CountsBar
from langchain_batchkit._batch_api._state import ItemState
from langchain_batchkit._embed import EmbedReport
from langchain_batchkit._embed_paced import PacedEmbeddings, model_of
from langchain_batchkit._embed_pack import EmbedLimits, fit_text
from langchain_batchkit._embed_run import EmbedFailure, EmbedRun, key_or_index, piece_of
from langchain_batchkit._embed_store import Embedded, EmbeddingStore, StoredFailure
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._prices import CallUsage, PriceBook

__all__ = ["BatchEmbeddings"]

#: The endpoint of every line and job.
EMBEDDINGS = "/v1/embeddings"


@dataclass(slots=True)
class _Prepared:
    """One run's texts, read up front (a job needs every line before it is created)."""

    total: int = 0
    resumed: int = 0
    keys: dict[int, str] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    requests: dict[int, PreparedRequest] = field(default_factory=dict)
    failures: list[EmbedFailure] = field(default_factory=list)


@dataclass(slots=True)
class _Tally:
    """What the vector sink did in this process."""

    embedded: set[int] = field(default_factory=set)
    tokens: int = 0
    cost: float | None = None


class BatchEmbeddings:
    """Embed many texts with an ``OpenAIEmbeddings`` model through OpenAI's Batch API.

    Why: the Batch API costs half as much as online calls and does not count
    against the online rate limits; it answers within 24 hours. Use it to index a
    corpus nobody waits for; use :func:`embed_texts` when you need the vectors now.

    Args:
        embeddings: an ``OpenAIEmbeddings`` (or a :func:`paced_embeddings` wrapper of
            one; the limiter does not apply to jobs). Its key, base URL, model and
            ``dimensions`` are used. ``check_embedding_ctx_length=False`` keeps it
            from downloading tiktoken's encodings; tokens are counted offline.
        options: job limits, polling and resubmission (:class:`BatchAPIOptions`);
            its ``prices`` price each text at the Batch tier.
        state_path: the SQLite file of the run's jobs; a run with the same file and
            the same inputs resumes them. ``None`` keeps it in memory. It may be the
            checkpoint file too.
        limits: what a text over the model's input limit becomes (its error, or
            truncated: ``EmbedLimits(too_long="truncate")``). ``too_long="split"``
            is refused: a batch job sends each text as one request line, so use
            :func:`embed_texts` for texts that must be split.
        progress: a ``tqdm.auto`` bar over the texts sent, moving as jobs end
            (``None``: from 10 texts on; ``False``: none).

    Example:
        >>> batch = BatchEmbeddings(OpenAIEmbeddings(model="text-embedding-3-small",
        ...                                          check_embedding_ctx_length=False),
        ...                         state_path="jobs.sqlite")            # doctest: +SKIP
        >>> report = batch.run(chunks, checkpoint="vectors.sqlite",
        ...                    key=lambda c: c["id"])                     # doctest: +SKIP
        >>> report.store.to_parquet("vectors.parquet")                   # doctest: +SKIP
    """

    def __init__(
        self,
        embeddings: Embeddings,
        *,
        options: BatchAPIOptions | None = None,
        state_path: str | os.PathLike[str] | None = None,
        limits: EmbedLimits | None = None,
        progress: bool | None = None,
    ) -> None:
        from langchain_openai import AzureOpenAIEmbeddings, OpenAIEmbeddings

        if isinstance(embeddings, PacedEmbeddings):
            limits = limits or embeddings.limits
            embeddings = embeddings.embeddings
        if isinstance(embeddings, AzureOpenAIEmbeddings) or not isinstance(
            embeddings, OpenAIEmbeddings
        ):
            raise ConfigurationError(
                f"BatchEmbeddings takes an OpenAIEmbeddings, got {type(embeddings).__name__}"
            )
        if options is not None and not isinstance(options, BatchAPIOptions):
            raise ConfigurationError(f"options must be a BatchAPIOptions, got {options!r}")
        self.embeddings = embeddings
        self.model = model_of(embeddings) or "text-embedding-ada-002"
        self.options = options or BatchAPIOptions()
        self.state_path = os.fspath(state_path) if state_path is not None else None
        self.limits = limits or EmbedLimits.for_model(self.model)
        self.progress = progress
        if self.limits.too_long == "split":
            raise ConfigurationError(
                "BatchEmbeddings cannot split a text over the input limit (a job line is "
                "one text): use too_long='error' or 'truncate', or embed_texts to split"
            )
        self._control = JobControl()

    def __repr__(self) -> str:
        return f"BatchEmbeddings(model={self.model!r}, state_path={self.state_path!r})"

    # -- entry points --------------------------------------------------------------------

    def run(
        self,
        texts: Iterable[Any],
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        key: Callable[[Any], object] | None = None,
        text: Callable[[Any], str] | None = None,
    ) -> EmbedReport:
        """Embed every text through Batch API jobs; blocks until every job has ended.

        The job I/O runs on a private loop with a client made for it (as
        :meth:`BatchAPIRunner.run`); works inside a running loop too.

        Args:
            texts: strings, ``Document``\\ s or mappings with a ``"text"`` (read into
                memory: every line is needed before its job is created).
            checkpoint: the :class:`EmbeddingStore` file for the vectors (``None``: a
                temporary file, ``report.store.path``). Keys in it are not sent again.
            key: a record's stable, unique key (default: its position).
            text: a record's text, when it is not a str, ``Document`` or ``{"text"}``.

        Returns:
            An :class:`EmbedReport`; ``requests`` counts lines sent, ``retries``
            resubmissions, and ``cost`` is at the Batch tier.
        """
        with self._control.exclusive(self, self.state_path):
            return self._finish(*self._execute(texts, checkpoint, key, text, private=True))

    async def arun(
        self,
        texts: Iterable[Any],
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        key: Callable[[Any], object] | None = None,
        text: Callable[[Any], str] | None = None,
    ) -> EmbedReport:
        """Async twin of :meth:`run`: the job I/O runs on the caller's loop."""
        with self._control.exclusive(self, self.state_path):
            started, store, prepared = self._prepare(texts, checkpoint, key, text)
            tally = _Tally()
            items = await self._drive(store.path, prepared, tally, private_loop=False)
            return self._finish(started, store, prepared, tally, items)

    def cancel(self) -> list[str]:
        """Cancel the jobs of the running run and of the state file (see
        :meth:`BatchAPIRunner.cancel`); their unfinished texts fail."""
        return run_on_private_loop(self._control.cancel(lambda _: self._api(True), self.state_path))

    async def acancel(self) -> list[str]:
        """Async twin of :meth:`cancel`."""
        return await self._control.cancel(lambda _: self._api(False), self.state_path)

    # -- the phases ----------------------------------------------------------------------

    def _execute(
        self,
        texts: Iterable[Any],
        checkpoint: str | os.PathLike[str] | None,
        key: Callable[[Any], object] | None,
        text: Callable[[Any], str] | None,
        *,
        private: bool,
    ) -> tuple[float, EmbeddingStore, _Prepared, _Tally, dict[int, ItemState]]:
        started, store, prepared = self._prepare(texts, checkpoint, key, text)
        tally = _Tally()
        coro = self._drive(store.path, prepared, tally, private_loop=private)
        return started, store, prepared, tally, run_on_private_loop(coro)

    def _api(self, private_loop: bool) -> OpenAIBatches:
        client = self.embeddings.async_client._client
        http = self.embeddings.http_async_client
        return OpenAIBatches.for_client(
            client, http, private_loop=private_loop, endpoint=EMBEDDINGS
        )

    def _prepare(
        self,
        texts: Iterable[Any],
        checkpoint: str | os.PathLike[str] | None,
        key: Callable[[Any], object] | None,
        text: Callable[[Any], str] | None,
    ) -> tuple[float, EmbeddingStore, _Prepared]:
        """Read the texts; skip stored keys; the request of every other text."""
        started = time.monotonic()
        if checkpoint is None:
            checkpoint = os.path.join(tempfile.mkdtemp(prefix="batchkit-embed-"), "vectors.sqlite")
        store = EmbeddingStore(checkpoint)
        store.bind(self.model)
        prepared = _Prepared()
        pieces = []
        for index, record in enumerate(texts):
            prepared.total += 1
            try:
                pieces.append(piece_of(index, record, key=key, text=text, metadata=False))
            except Exception as exc:
                name = key_or_index(index, record, key)
                prepared.failures.append(
                    EmbedFailure(index, name, type(exc).__name__, str(exc), exc)
                )
        done = store.lookup([p.key for p in pieces])
        extra: dict[str, Any] = {"encoding_format": "base64"}
        if self.embeddings.dimensions is not None:
            extra["dimensions"] = self.embeddings.dimensions
        for piece in pieces:
            if piece.key in done:
                prepared.resumed += 1
                continue
            fitted = fit_text(piece.text, self.model, self.limits)
            if isinstance(fitted, str):
                prepared.failures.append(
                    EmbedFailure(piece.index, piece.key, "TextTooLong", fitted)
                )
                continue
            body = {"model": self.model, "input": [fitted[0]], **extra}
            body_json = json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            digest = hashlib.sha256(body_json.encode()).hexdigest()
            prepared.requests[piece.index] = PreparedRequest(body_json, digest)
            prepared.keys[piece.index] = piece.key
            prepared.tokens[piece.index] = fitted[1]
        return started, store, prepared

    async def _drive(
        self, path: str, prepared: _Prepared, tally: _Tally, *, private_loop: bool
    ) -> dict[int, ItemState]:
        if not prepared.requests:
            return {}
        sink = _VectorSink(path, self.model, prepared, tally, self.options.prices)
        bar = CountsBar(
            len(prepared.requests), self.progress, desc=f"batch ({self.model})", unit="text"
        )
        try:
            return await drive_jobs(
                state_path=self.state_path,
                n_items=prepared.total,
                requests=prepared.requests,
                api=lambda: self._api(private_loop),
                options=self.options,
                control=self._control,
                sink=sink,
                on_counts=bar if bar.shown else None,
            )
        finally:
            bar.close()
            sink.close()

    def _finish(
        self,
        started: float,
        store: EmbeddingStore,
        prepared: _Prepared,
        tally: _Tally,
        items: Mapping[int, ItemState],
    ) -> EmbedReport:
        failures = list(prepared.failures)
        for idx, state in sorted(items.items()):
            if idx in tally.embedded:
                continue
            name = prepared.keys[idx]
            if state.status == "succeeded":  # recorded as done, yet not in this store
                message = (
                    f"the state file records this text as embedded, but {store.path} "
                    "lacks its vector: use a new state file with this checkpoint"
                )
                failures.append(EmbedFailure(idx, name, "BatchStateError", message))
            elif state.error is not None:
                error = state.error
                failures.append(EmbedFailure(idx, name, error.type, error.message, error.exception))
        store.commit([], [StoredFailure(f.key, f.kind, f.message) for f in failures])
        sent = sum(state.submissions for state in items.values())
        return EmbedReport(
            texts=prepared.total,
            embedded=len(tally.embedded),
            resumed=prepared.resumed,
            failed=len(failures),
            added=0,
            requests=sent,
            retries=sum(max(0, state.submissions - 1) for state in items.values()),
            splits=0,
            tokens=tally.tokens,
            cost=tally.cost,
            elapsed=time.monotonic() - started,
            failures=tuple(failures[: EmbedRun.MAX_FAILURES]),
            store=store,
        )


class _VectorSink:
    """Puts a collected job's vectors in the store; the state file keeps their usage.

    Opens its own connection, in the thread of the loop that drives the jobs (a
    sync run's private loop may run in a worker thread).
    """

    __slots__ = ("_model", "_path", "_prepared", "_prices", "_store", "_tally")

    def __init__(
        self,
        path: str,
        model: str,
        prepared: _Prepared,
        tally: _Tally,
        prices: PriceBook | Mapping[str, Any] | None,
    ) -> None:
        self._path = path
        self._model = model
        self._prepared = prepared
        self._tally = tally
        self._prices = prices if isinstance(prices, PriceBook) else PriceBook()
        self._store: EmbeddingStore | None = None

    def __call__(
        self, answers: Mapping[int, Mapping[str, Any]]
    ) -> dict[int, dict[str, Any] | Exception]:
        kept: dict[int, dict[str, Any] | Exception] = {}
        done: list[Embedded] = []
        for idx, body in answers.items():
            try:
                vector = _vector(body)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                kept[idx] = ValueError(f"unreadable embeddings answer: {exc!r}")
                continue
            usage = body.get("usage")
            tokens = self._prepared.tokens[idx]
            if isinstance(usage, Mapping) and isinstance(usage.get("prompt_tokens"), int):
                tokens = usage["prompt_tokens"]
            cost = self._prices.cost(
                CallUsage(input_tokens=tokens), self._model, provider="openai", tier="batch"
            )
            done.append(Embedded(self._prepared.keys[idx], vector, tokens, cost))
            kept[idx] = {"usage": {"prompt_tokens": tokens}, "cost": cost}
        if self._store is None:
            self._store = EmbeddingStore(self._path)
        self._store.commit(done, [])
        for idx, answer in kept.items():
            if isinstance(answer, dict):
                self._tally.embedded.add(idx)
                self._tally.tokens += answer["usage"]["prompt_tokens"]
                if answer["cost"] is not None:
                    self._tally.cost = (self._tally.cost or 0.0) + answer["cost"]
        return kept

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _vector(body: Mapping[str, Any]) -> list[float]:
    """The one vector of an answer body (base64 float32, or a list of floats)."""
    [entry] = body["data"]
    encoded = entry["embedding"]
    if isinstance(encoded, str):
        values = array("f")
        values.frombytes(base64.b64decode(encoded))
        return values.tolist()
    return [float(x) for x in encoded]
