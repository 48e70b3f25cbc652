"""One embedding run's decisions, written once for both drivers; no network, no sleeping.

What to send next (read the input lazily, skip keys already stored, pack), what a
failed attempt leads to (retry after a wait, split the request in halves to find
the bad text, or fail its texts), and what a finished request commits (vectors,
costs, errors, the next batch for ``into=``). The drivers in :mod:`._embed` only
send requests, sleep and add to the vector store.

A text over the input limit with ``too_long="split"`` is packed as its chunks;
each chunk's vector is folded into the text's running token-weighted sum as it
arrives, and when the last chunk is in, the text gets one vector (that sum at
unit length), one store row and one ``into=`` entry, under its own key. A chunk
that fails fails the text; a crash before its last chunk leaves no row, so a
resumed run sends the whole text again.

Memory is bounded by what is in flight: the input is read a chunk at a time and
only when a request is needed, results go to the store as they finish, a split
text holds one running sum until its last chunk is in, the report keeps counts
and the first failures, and the ``into=`` buffer holds one batch.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.documents import Document
from tenacity import RetryCallState

from langchain_batchkit._embed_pack import EmbedLimits, Packer, Piece, cut_text
from langchain_batchkit._embed_store import Embedded, EmbeddingStore, StoredFailure
from langchain_batchkit._errors import describe_exception
from langchain_batchkit._prices import CallUsage, PriceBook
from langchain_batchkit._progress import ProgressReporter
from langchain_batchkit._retry import RetryPolicy

__all__ = [
    "AddBatch",
    "EmbedFailure",
    "EmbedRun",
    "Request",
    "RunCounts",
    "key_or_index",
    "piece_of",
]

_READ_CHUNK = 512  # inputs read (and looked up in the store) at a time


@dataclass(frozen=True, slots=True)
class EmbedFailure:
    """A text that could not be embedded: where it was, its key, and why.

    ``error`` is the exception itself when the text failed in this run.
    """

    index: int
    key: str
    kind: str
    message: str
    error: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class Request:
    """Texts sent together, with the retry state of this group."""

    pieces: list[Piece]
    tokens: int
    retry: RetryCallState | None = None
    failures: int = 0

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.pieces]


@dataclass(slots=True)
class _Parts:
    """A split text waiting for its chunks: the token-weighted sum of their vectors so far."""

    piece: Piece
    pending: int
    tokens: int = 0
    cost: float | None = None
    total: list[float] | None = None
    failed: bool = False


@dataclass(frozen=True, slots=True)
class AddBatch:
    """Texts to add to the vector store together."""

    keys: list[str]
    texts: list[str]
    vectors: list[list[float]]
    metadatas: list[dict[str, Any]]

    def documents(self) -> list[Document]:
        return [
            Document(page_content=t, metadata=m, id=k)
            for k, t, m in zip(self.keys, self.texts, self.metadatas, strict=True)
        ]


@dataclass(slots=True)
class RunCounts:
    """What a run did so far."""

    texts: int = 0
    embedded: int = 0
    resumed: int = 0
    failed: int = 0
    added: int = 0
    requests: int = 0
    retries: int = 0
    splits: int = 0
    tokens: int = 0
    cost: float | None = None
    failures: list[EmbedFailure] = field(default_factory=list)


class EmbedRun:
    """The state of one run: the input cursor, the packer, the store, the counts.

    Used by one driver thread (or the loop's thread) only; workers never touch it.
    """

    MAX_FAILURES = 1000

    def __init__(
        self,
        source: Iterable[Any],
        *,
        store: EmbeddingStore,
        model: str | None,
        limits: EmbedLimits,
        max_request_tokens: int | None,
        key: Callable[[Any], object] | None,
        text: Callable[[Any], str] | None,
        policy: RetryPolicy,
        clock: Callable[[], float],
        prices: PriceBook,
        provider: str | None,
        progress: ProgressReporter,
        into: bool,
        add_batch_size: int,
    ) -> None:
        self._source: Iterator[tuple[int, Any]] = enumerate(source)
        self._store = store
        self._model = model
        self._limits = limits
        self._packer = Packer(max_inputs=limits.max_inputs, max_tokens=max_request_tokens)
        self._key = key
        self._text = text
        self._policy = policy
        self._clock = clock
        self._prices = prices
        self._provider = provider
        self._progress = progress
        self._into = into
        self._add_size = add_batch_size
        self._ready: deque[Request] = deque()
        self._to_add: list[tuple[Piece, list[float]]] = []
        self._parts: dict[int, _Parts] = {}
        self._look_up = len(store) > 0
        self._exhausted = False
        self.counts = RunCounts()

    # -- what to send -------------------------------------------------------------------------

    def next_request(self) -> Request | None:
        """The next request to send (split halves first), or ``None`` when all are sent."""
        while not self._ready and not self._exhausted:
            self._read_chunk()
        return self._ready.popleft() if self._ready else None

    def _read_chunk(self) -> None:
        chunk = list(itertools.islice(self._source, _READ_CHUNK))
        if not chunk:
            self._exhausted = True
            self._emit(self._packer.flush())
            return
        pieces: list[Piece] = []
        failures: list[EmbedFailure] = []
        for index, record in chunk:
            self.counts.texts += 1
            try:
                pieces.append(self._piece(index, record))
            except Exception as exc:
                key = self._key_or_index(index, record)
                failures.append(EmbedFailure(index, key, type(exc).__name__, str(exc), exc))
        done = self._store.lookup([p.key for p in pieces]) if self._look_up else {}
        resumed = [p for p in pieces if p.key in done]
        self._resume(resumed, done)
        for piece in pieces:
            if piece.key in done:
                continue
            cut = cut_text(piece.text, self._model, self._limits)
            if isinstance(cut, str):
                failures.append(EmbedFailure(piece.index, piece.key, "TextTooLong", cut))
                continue
            if len(cut) == 1:
                self._emit(self._packer.add(_replace(piece, *cut[0])))
                continue
            whole = piece if self._into else _replace(piece, "", 0)
            self._parts[piece.index] = _Parts(whole, len(cut))
            for text, tokens in cut:
                part = Piece(piece.index, piece.key, text, tokens, None, chunk=True)
                self._emit(self._packer.add(part))
        self._fail(failures)

    def _piece(self, index: int, record: Any) -> Piece:
        return piece_of(index, record, key=self._key, text=self._text, metadata=self._into)

    def _key_or_index(self, index: int, record: Any) -> str:
        return key_or_index(index, record, self._key)

    def _resume(self, resumed: list[Piece], done: Mapping[str, bool]) -> None:
        if not resumed:
            return
        self.counts.resumed += len(resumed)
        self._progress.count(len(resumed), 0)
        unadded = [p for p in resumed if self._into and not done[p.key]]
        if unadded:
            vectors = self._store.vectors_of([p.key for p in unadded])
            self._to_add += [(p, vectors[p.key]) for p in unadded]

    def _emit(self, pieces: list[Piece] | None) -> None:
        if pieces:
            self._ready.append(Request(pieces, sum(p.tokens for p in pieces)))

    # -- how an attempt ended -----------------------------------------------------------------

    def retry_delay(self, request: Request, error: Exception) -> float | None:
        """Seconds to wait before sending ``request`` again, or ``None``: it has failed.

        Pure but for the request's own retry state; called by the worker that sent it.
        """
        now = self._clock()
        request.failures += 1
        if request.retry is None:
            request.retry = self._policy.new_state(now)
        else:
            request.retry.prepare_for_next_attempt()
        return self._policy.decide(request.retry, error, now)

    def settle(self, request: Request, outcome: list[list[float]] | Exception) -> list[AddBatch]:
        """Commit a finished request; returns the ``into=`` batches now due."""
        failed = isinstance(outcome, Exception)
        self.counts.requests += request.failures + (0 if failed else 1)
        self.counts.retries += request.failures - (1 if failed else 0)
        if isinstance(outcome, Exception):
            if len(request.pieces) > 1 and not self._policy.should_retry(outcome):
                self.counts.splits += 1
                half = len(request.pieces) // 2
                for part in (request.pieces[:half], request.pieces[half:]):
                    self._ready.appendleft(Request(part, sum(p.tokens for p in part)))
                return []
            kind, message = type(outcome).__name__, describe_exception(outcome)
            self._fail(
                [
                    EmbedFailure(p.index, p.key, kind, message, outcome)
                    for p in request.pieces
                    if not p.chunk or self._chunk_failed(p)
                ]
            )
            return []
        cost = None
        if self._model is not None:
            usage = CallUsage(input_tokens=request.tokens)
            cost = self._prices.cost(usage, self._model, provider=self._provider)
        done: list[Embedded] = []
        finished: list[tuple[Piece, list[float]]] = []
        for piece, vector in zip(request.pieces, outcome, strict=True):
            share = None if cost is None else cost * piece.tokens / max(1, request.tokens)
            if piece.chunk:
                whole = self._chunk_done(piece, vector, share)
                if whole is not None:
                    done.append(whole[1])
                    finished.append((whole[0], list(whole[1].vector)))
                continue
            done.append(Embedded(piece.key, vector, piece.tokens, share))
            finished.append((piece, vector))
        self._store.commit(done, [])
        self.counts.embedded += len(done)
        self.counts.tokens += request.tokens
        if cost is not None:
            self.counts.cost = (self.counts.cost or 0.0) + cost
        self._progress.count(len(done), 0, cost)
        if self._into:
            self._to_add += finished
        return self.due_adds(final=False)

    def _chunk_done(
        self, chunk: Piece, vector: list[float], cost: float | None
    ) -> tuple[Piece, Embedded] | None:
        """Fold a chunk's vector into its text's; the text and its row once it is whole."""
        parts = self._parts[chunk.index]
        parts.pending -= 1
        if not parts.failed:
            parts.tokens += chunk.tokens
            if cost is not None:
                parts.cost = (parts.cost or 0.0) + cost
            weighted = [chunk.tokens * x for x in vector]
            if parts.total is None:
                parts.total = weighted
            else:
                parts.total = [a + b for a, b in zip(parts.total, weighted, strict=True)]
        if parts.pending:
            return None
        del self._parts[chunk.index]
        if parts.failed or parts.total is None:
            return None
        whole = Embedded(chunk.key, _unit(parts.total), parts.tokens, parts.cost)
        return parts.piece, whole

    def _chunk_failed(self, chunk: Piece) -> bool:
        """Whether this is the first chunk of its text to fail (the text's failure)."""
        parts = self._parts[chunk.index]
        parts.pending -= 1
        first, parts.failed = not parts.failed, True
        if not parts.pending:
            del self._parts[chunk.index]
        return first

    def _fail(self, failures: list[EmbedFailure]) -> None:
        if not failures:
            return
        self._store.commit([], [StoredFailure(f.key, f.kind, f.message) for f in failures])
        self.counts.failed += len(failures)
        room = self.MAX_FAILURES - len(self.counts.failures)
        self.counts.failures += failures[: max(0, room)]
        self._progress.count(0, len(failures))

    # -- into= --------------------------------------------------------------------------------

    def due_adds(self, *, final: bool) -> list[AddBatch]:
        """Full batches for the vector store (and the rest too when ``final``)."""
        batches = []
        while len(self._to_add) >= self._add_size or (final and self._to_add):
            taken, self._to_add = self._to_add[: self._add_size], self._to_add[self._add_size :]
            batches.append(
                AddBatch(
                    [p.key for p, _ in taken],
                    [p.text for p, _ in taken],
                    [v for _, v in taken],
                    [dict(p.metadata or {}) for p, _ in taken],
                )
            )
        return batches

    def added(self, batch: AddBatch) -> None:
        """The vector store has ``batch``: a resumed run must not add it again."""
        self._store.mark_added(batch.keys)
        self.counts.added += len(batch.keys)


def piece_of(
    index: int,
    record: Any,
    *,
    key: Callable[[Any], object] | None,
    text: Callable[[Any], str] | None,
    metadata: bool,
) -> Piece:
    """The input ``record`` at ``index`` as a :class:`Piece` (its tokens not counted yet).

    Raises:
        TypeError: the record's text cannot be found, or ``text=`` returned no str.
    """
    name = str(key(record)) if key is not None else str(index)
    if text is not None:
        found: object = text(record)
    elif isinstance(record, str):
        found = record
    elif isinstance(record, Document):
        found = record.page_content
    elif isinstance(record, Mapping) and isinstance(record.get("text"), str):
        found = record["text"]
    else:
        raise TypeError(
            f"cannot find the text in a {type(record).__name__}: pass text=<record -> str>"
        )
    if not isinstance(found, str):
        raise TypeError(f"text= returned a {type(found).__name__}, not a str")
    return Piece(index, name, found, 0, _metadata(record) if metadata else None)


def key_or_index(index: int, record: Any, key: Callable[[Any], object] | None) -> str:
    """The record's key, or its index when there is no key function or it fails."""
    try:
        return str(key(record)) if key is not None else str(index)
    except Exception:
        return str(index)


def _replace(piece: Piece, text: str, tokens: int) -> Piece:
    return Piece(piece.index, piece.key, text, tokens, piece.metadata)


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _metadata(record: Any) -> Mapping[str, Any] | None:
    if isinstance(record, Document):
        return record.metadata
    if isinstance(record, Mapping):
        return {k: v for k, v in record.items() if k != "text"}
    return None
