"""Server counters: a thread-safe mutable side and a frozen snapshot tests read."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from langchain_batchkit.testing._fakeserver._config import EPSILON

__all__ = ["Counters", "ServerStats"]


@dataclass(frozen=True, slots=True)
class ServerStats:
    """A consistent snapshot of a server's counters, taken under one lock.

    Attributes:
        total_requests: HTTP requests received, on any route.
        responses_by_status: responses sent, by HTTP status code.
        rate_limited: responses with status 429 (limiter, scripted and
            flex-unavailable).
        dropped: requests whose connection was closed without a response.
        hung: requests that were never answered.
        in_flight: requests being processed right now (hung ones included).
        max_in_flight: the high-water mark of ``in_flight``.
        connections_opened: TCP connections accepted (keep-alive reuses them).
        images_seen: valid ``image_url`` parts (Anthropic ``image`` blocks) in requests
            that passed validation.
        answers_per_prompt: 200 chat (or Anthropic message) answers per
            last-user-message text.
        admitted_timestamps: ``clock`` values at which chat and embedding requests were admitted
            by the rate limiter, in admission order.
        files_uploaded: files created through ``POST /v1/files``.
        batches_created: batches accepted by ``POST /v1/batches`` (failed ones too)
            or ``POST /v1/messages/batches``.
        batch_lines_processed: batch lines (or Message Batch requests) that were run
            (answered or failed; not
            expired or dropped by a cancel). Lines run lazily, when a read of their
            batch finds their time has come, and each is counted once.
        flex_requests: valid chat requests that asked for ``service_tier="flex"``,
            whatever their answer (a 400 for an unsupported model included).
        flex_unavailable: flex requests refused with the 429
            ``resource_unavailable`` (also counted in ``rate_limited``).
        embedding_requests: valid ``/v1/embeddings`` requests received, whatever their
            answer (429s included).
        embedded_inputs: inputs answered with a vector (200s only).
        embedding_tokens: tokens of the inputs answered with a vector.
        enqueued_token_refusals: batches failed with ``token_limit_exceeded`` (see
            ``FakeServerConfig.batch_max_enqueued_tokens``).
        max_enqueued_tokens: the most prompt tokens the unfinished batches of one model
            held at once (taken when a batch is accepted, its own included).

    The online counters (``answers_per_prompt``, ``images_seen``, ...) count only
    ``/v1/chat/completions`` and ``/v1/messages`` requests, never batch lines.
    """

    total_requests: int
    responses_by_status: Mapping[int, int] = field(hash=False)
    rate_limited: int
    dropped: int
    hung: int
    in_flight: int
    max_in_flight: int
    connections_opened: int
    images_seen: int
    answers_per_prompt: Mapping[str, int] = field(hash=False)
    admitted_timestamps: tuple[float, ...]
    files_uploaded: int = 0
    batches_created: int = 0
    batch_lines_processed: int = 0
    flex_requests: int = 0
    flex_unavailable: int = 0
    embedding_requests: int = 0
    embedded_inputs: int = 0
    embedding_tokens: int = 0
    enqueued_token_refusals: int = 0
    max_enqueued_tokens: int = 0

    def max_admitted_in_window(self, window_seconds: float) -> int:
        """The most admissions inside any half-open window ``[t, t + window_seconds)``.

        Lets a test assert a client never exceeded a rate over *any* window, not just
        aligned ones.

        Example:
            >>> from langchain_batchkit.testing import FakeOpenAIServer
            >>> stats = FakeOpenAIServer().stats()
            >>> stats.max_admitted_in_window(1.0)
            0
        """
        times = sorted(self.admitted_timestamps)
        best = 0
        start = 0
        for end, t in enumerate(times):
            while times[start] + window_seconds <= t + EPSILON:
                start += 1
            best = max(best, end - start + 1)
        return best


class Counters:
    """The mutable, thread-safe side of :class:`ServerStats`.

    Written by the server thread, read by tests; a condition variable lets tests wait
    for a state (``wait_for``) without polling.
    """

    __slots__ = (
        "_admitted",
        "_answers",
        "_batch_lines",
        "_batches",
        "_changed",
        "_connections",
        "_dropped",
        "_embedded",
        "_embedding_requests",
        "_embedding_tokens",
        "_enqueued_refusals",
        "_files",
        "_flex",
        "_flex_unavailable",
        "_hung",
        "_images",
        "_in_flight",
        "_max_enqueued",
        "_max_in_flight",
        "_requests",
        "_statuses",
    )

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._in_flight = 0
        self._requests = 0
        self._connections = 0
        self._dropped = 0
        self._hung = 0
        self._images = 0
        self._max_in_flight = 0
        self._statuses: Counter[int] = Counter()
        self._answers: Counter[str] = Counter()
        self._admitted: list[float] = []
        self._files = 0
        self._batches = 0
        self._batch_lines = 0
        self._flex = 0
        self._flex_unavailable = 0
        self._embedding_requests = self._embedded = self._embedding_tokens = 0
        self._enqueued_refusals = self._max_enqueued = 0

    def reset(self) -> None:
        with self._changed:
            self._requests = self._connections = self._dropped = self._hung = self._images = 0
            self._files = self._batches = self._batch_lines = 0
            self._flex = self._flex_unavailable = 0
            self._embedding_requests = self._embedded = self._embedding_tokens = 0
            self._enqueued_refusals = self._max_enqueued = 0
            self._max_in_flight = self._in_flight
            self._statuses.clear()
            self._answers.clear()
            self._admitted.clear()
            self._changed.notify_all()

    def connection_opened(self) -> None:
        with self._changed:
            self._connections += 1
            self._changed.notify_all()

    def request_started(self) -> None:
        with self._changed:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._changed.notify_all()

    def request_finished(self) -> None:
        with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()

    def record_status(self, status: int) -> None:
        with self._changed:
            self._statuses[status] += 1
            self._changed.notify_all()

    def record_drop(self) -> None:
        with self._changed:
            self._dropped += 1
            self._changed.notify_all()

    def record_hang(self) -> None:
        with self._changed:
            self._hung += 1
            self._changed.notify_all()

    def record_admission(self, now: float) -> None:
        with self._changed:
            self._admitted.append(now)
            self._changed.notify_all()

    def record_answer(self, prompt: str) -> None:
        with self._changed:
            self._answers[prompt] += 1
            self._changed.notify_all()

    def record_images(self, count: int) -> None:
        if count:
            with self._changed:
                self._images += count
                self._changed.notify_all()

    def record_flex_request(self) -> None:
        with self._changed:
            self._flex += 1
            self._changed.notify_all()

    def record_flex_unavailable(self) -> None:
        with self._changed:
            self._flex_unavailable += 1
            self._changed.notify_all()

    def record_embedding_request(self) -> None:
        with self._changed:
            self._embedding_requests += 1
            self._changed.notify_all()

    def record_embedded(self, inputs: int, tokens: int) -> None:
        with self._changed:
            self._embedded += inputs
            self._embedding_tokens += tokens
            self._changed.notify_all()

    def record_file_upload(self) -> None:
        with self._changed:
            self._files += 1
            self._changed.notify_all()

    def record_batch_created(self) -> None:
        with self._changed:
            self._batches += 1
            self._changed.notify_all()

    def record_batch_lines(self, count: int) -> None:
        if count:
            with self._changed:
                self._batch_lines += count
                self._changed.notify_all()

    def record_enqueued(self, tokens: int) -> None:
        """A batch was accepted with ``tokens`` enqueued for its model, its own included."""
        with self._changed:
            self._max_enqueued = max(self._max_enqueued, tokens)
            self._changed.notify_all()

    def record_enqueued_refusal(self) -> None:
        with self._changed:
            self._enqueued_refusals += 1
            self._changed.notify_all()

    def snapshot(self) -> ServerStats:
        with self._changed:
            return self._snapshot_locked()

    def wait_for(self, predicate: Callable[[ServerStats], bool], timeout: float) -> ServerStats:
        with self._changed:
            satisfied = self._changed.wait_for(
                lambda: predicate(self._snapshot_locked()), timeout=timeout
            )
            snapshot = self._snapshot_locked()
        if not satisfied:
            raise TimeoutError(
                f"server stats did not reach the expected state in {timeout}s: {snapshot}"
            )
        return snapshot

    def _snapshot_locked(self) -> ServerStats:
        return ServerStats(
            total_requests=self._requests,
            responses_by_status=MappingProxyType(dict(self._statuses)),
            rate_limited=self._statuses[429],
            dropped=self._dropped,
            hung=self._hung,
            in_flight=self._in_flight,
            max_in_flight=self._max_in_flight,
            connections_opened=self._connections,
            images_seen=self._images,
            answers_per_prompt=MappingProxyType(dict(self._answers)),
            admitted_timestamps=tuple(self._admitted),
            files_uploaded=self._files,
            batches_created=self._batches,
            batch_lines_processed=self._batch_lines,
            flex_requests=self._flex,
            flex_unavailable=self._flex_unavailable,
            embedding_requests=self._embedding_requests,
            embedded_inputs=self._embedded,
            embedding_tokens=self._embedding_tokens,
            enqueued_token_refusals=self._enqueued_refusals,
            max_enqueued_tokens=self._max_enqueued,
        )
