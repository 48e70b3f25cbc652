"""Anthropic Message Batches: an in-memory store whose state is computed from the clock.

The same timeline as the OpenAI batches (:mod:`._batches`), in Anthropic's terms.
A batch created at ``t0`` with ``n`` requests runs them in a shuffled order (a
per-batch RNG derived from ``seed``), request ``k`` at ``t0 + delay * (k + 1) / n``
(``delay`` is ``batch_completion_delay``), and reads ``processing_status: "ended"``
from ``t0 + delay``. Requests run when a read finds their time has come, with the
online answer logic (:func:`compose_answer`), so nothing runs in the background and
a test with a fake clock advances time instead of waiting.

Each request ends ``succeeded`` (its ``message``), ``errored`` (an invalid request:
``invalid_request_error``; ``batch_line_error_rate``: ``api_error``), ``expired``
(``batch_expired_fraction`` of them, rounded up, never run) or ``canceled``.
``cancel`` answers ``canceling``; requests finished by then keep their results,
the others end ``canceled``, and the batch ends ``batch_cancel_delay`` seconds
later. As on the real service, ``request_counts`` shows every request as
``processing`` until the batch ends, and ``results_url`` is set only then.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from langchain_batchkit.testing._fakeserver._anthropic_messages import (
    anthropic_error_body,
    message_object,
    parse_message_payload,
)
from langchain_batchkit.testing._fakeserver._batch_exec import scripted_mistake
from langchain_batchkit.testing._fakeserver._chat import check_not_rejected, compose_answer
from langchain_batchkit.testing._fakeserver._config import EPSILON, FakeServerConfig
from langchain_batchkit.testing._fakeserver._exchange import ApiError, InvalidRequest
from langchain_batchkit.testing._fakeserver._files import WallClock
from langchain_batchkit.testing._fakeserver._stats import Counters

__all__ = ["BatchRequest", "MessageBatchStore"]

logger = logging.getLogger(__name__)

ProcessingStatus = Literal["in_progress", "canceling", "ended"]

_WINDOW_SECONDS = 24 * 60 * 60
_RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request of a batch, as created: its key and its Messages parameters."""

    custom_id: str
    params: Mapping[str, object] = field(hash=False)


@dataclass(frozen=True, slots=True)
class _Phase:
    """Where a batch is on its timeline: status, requests that ran, when it ended."""

    status: ProcessingStatus
    finished: int
    ended_at: float | None = None


@dataclass(slots=True, eq=False)
class _Batch:
    """A batch's fixed plan and its progress; guarded by the store's lock."""

    number: int
    id: str
    created: float
    requests: tuple[BatchRequest, ...]  # in processing (shuffled) order
    server_errors: tuple[bool, ...]
    runnable: int  # requests[:runnable] run; the rest expire
    results: list[dict[str, object]] = field(default_factory=list)
    cancel_at: float | None = None


class MessageBatchStore:
    """Thread-safe Message Batches for the Anthropic routes; see the module docstring."""

    __slots__ = ("_batches", "_config", "_counters", "_lock", "_numbers", "_wall")

    def __init__(self, config: FakeServerConfig, counters: Counters, wall: WallClock) -> None:
        self._config = config
        self._counters = counters
        self._wall = wall
        self._lock = threading.Lock()
        self._batches: dict[str, _Batch] = {}
        self._numbers = itertools.count(1)

    def create(self, requests: Sequence[BatchRequest], *, base_url: str) -> dict[str, object]:
        """Plan a batch of already validated requests; answers it ``in_progress``."""
        config = self._config
        with self._lock:
            number = next(self._numbers)
            rng = random.Random(f"{config.seed}/message-batch/{number}")
            shuffled = list(requests)
            rng.shuffle(shuffled)
            rate = config.batch_line_error_rate
            expired = math.ceil(len(shuffled) * config.batch_expired_fraction)
            batch = _Batch(
                number=number,
                id=f"msgbatch_fake{number:012d}",
                created=self._wall.now(),
                requests=tuple(shuffled),
                server_errors=tuple(rate > 0 and rng.random() < rate for _ in shuffled),
                runnable=len(shuffled) - expired,
            )
            self._batches[batch.id] = batch
            self._counters.record_batch_created()
            return self._to_json(batch, self._observe(batch), base_url)

    def retrieve(self, batch_id: str, *, base_url: str) -> dict[str, object]:
        with self._lock:
            batch = self._get(batch_id)
            return self._to_json(batch, self._observe(batch), base_url)

    def cancel(self, batch_id: str, *, base_url: str) -> dict[str, object]:
        """Stop a batch in progress; requests finished by now keep their results.

        Raises:
            ApiError: 400 when the batch has already ended.
        """
        with self._lock:
            batch = self._get(batch_id)
            phase = self._observe(batch)
            if phase.status == "ended":
                raise InvalidRequest(f"Batch {batch_id} has already ended and cannot be canceled.")
            if batch.cancel_at is None:
                batch.cancel_at = self._wall.now()
            return self._to_json(batch, self._observe(batch), base_url)

    def results(self, batch_id: str) -> bytes:
        """The batch's results as JSONL, in processing order (not the order of creation).

        Raises:
            ApiError: 404 for an unknown batch, 400 while it has not ended.
        """
        with self._lock:
            batch = self._get(batch_id)
            phase = self._observe(batch)
            if phase.status != "ended":
                raise InvalidRequest(
                    f"Batch {batch_id} is still {phase.status}; its results are available "
                    "once processing has ended."
                )
            records = [
                {"custom_id": request.custom_id, "result": result}
                for request, result in zip(batch.requests, self._final(batch, phase), strict=True)
            ]
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()

    def page(
        self, *, limit: int, after_id: str | None, before_id: str | None, base_url: str
    ) -> dict[str, object]:
        """Batches newest first, ``limit`` after ``after_id`` or before ``before_id``."""
        with self._lock:
            ordered = list(reversed(self._batches.values()))
            ids = [batch.id for batch in ordered]
            for cursor in (after_id, before_id):
                if cursor is not None and cursor not in ids:
                    raise ApiError(404, f"No such message batch: {cursor}")
            if before_id is not None:
                end = ids.index(before_id)
                start = max(0, end - limit)
                more = start > 0
            else:
                start = ids.index(after_id) + 1 if after_id is not None else 0
                end = start + limit
                more = end < len(ordered)
            selected = ordered[start:end]
            data = [self._to_json(b, self._observe(b), base_url) for b in selected]
        return {
            "data": data,
            "has_more": more,
            "first_id": selected[0].id if selected else None,
            "last_id": selected[-1].id if selected else None,
        }

    # ------------------------------------------------------------------ timeline

    def _get(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No such message batch: {batch_id}")
        return batch

    def _phase(self, batch: _Batch, now: float) -> _Phase:
        if batch.cancel_at is not None:
            finished = self._finished_by(batch, batch.cancel_at)
            ended_at = batch.cancel_at + self._config.batch_cancel_delay
            if now + EPSILON >= ended_at:
                return _Phase("ended", finished, ended_at)
            return _Phase("canceling", finished)
        end = batch.created + self._config.batch_completion_delay
        if now + EPSILON >= end:
            return _Phase("ended", batch.runnable, end)
        return _Phase("in_progress", self._finished_by(batch, now))

    def _finished_by(self, batch: _Batch, moment: float) -> int:
        delay = self._config.batch_completion_delay
        if delay <= 0:
            return batch.runnable
        share = (moment - batch.created) / delay * len(batch.requests)
        return max(0, min(batch.runnable, math.floor(share + EPSILON)))

    def _observe(self, batch: _Batch) -> _Phase:
        """Place the batch at ``clock()`` and run the requests that are due."""
        phase = self._phase(batch, self._wall.now())
        start = len(batch.results)
        for k in range(start, phase.finished):
            message_id = f"msg_fakebatch{batch.number:06d}{k:08d}"
            batch.results.append(
                run_request(batch.requests[k], self._config, message_id, batch.server_errors[k])
            )
        self._counters.record_batch_lines(max(0, phase.finished - start))
        return phase

    def _final(self, batch: _Batch, phase: _Phase) -> list[dict[str, object]]:
        """Every request's result once the batch has ended."""
        unfinished = "canceled" if batch.cancel_at is not None else "expired"
        rest = len(batch.requests) - phase.finished
        return batch.results[: phase.finished] + [{"type": unfinished}] * rest

    # ------------------------------------------------------------------ JSON

    def _to_json(self, batch: _Batch, phase: _Phase, base_url: str) -> dict[str, object]:
        ended = phase.status == "ended"
        counts = dict.fromkeys(_RESULT_TYPES, 0)
        if ended:
            for result in self._final(batch, phase):
                counts[str(result["type"])] += 1
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": phase.status,
            "request_counts": {"processing": 0 if ended else len(batch.requests), **counts},
            "created_at": self._stamp(batch.created),
            "expires_at": self._stamp(batch.created + _WINDOW_SECONDS),
            "ended_at": self._stamp(phase.ended_at) if phase.ended_at is not None else None,
            "cancel_initiated_at": (
                self._stamp(batch.cancel_at) if batch.cancel_at is not None else None
            ),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def _stamp(self, monotonic: float) -> str:
        """RFC 3339, as Anthropic writes times (moving with the config's clock)."""
        moment = datetime.fromtimestamp(self._wall.unix(monotonic), tz=UTC)
        return moment.isoformat().replace("+00:00", "Z")


def run_request(
    request: BatchRequest, config: FakeServerConfig, message_id: str, server_error: bool
) -> dict[str, object]:
    """One request's ``result``: answered as ``POST /v1/messages`` would, or ``errored``."""
    if server_error:
        message = "Internal server error (injected fault)."
        return {"type": "errored", "error": anthropic_error_body("api_error", message)}
    try:
        if "stream" in request.params:
            raise InvalidRequest("stream: Extra inputs are not permitted in a batch request")
        chat = parse_message_payload(dict(request.params))
        check_not_rejected(chat, config)
        answer = compose_answer(chat, config, mistake=scripted_mistake(chat.prompt, config))
    except ApiError as exc:
        kind = "invalid_request_error" if exc.status < 500 else "api_error"
        return {"type": "errored", "error": anthropic_error_body(kind, exc.message)}
    except Exception:
        logger.exception("fake server could not answer message batch request %s", message_id)
        message = "The fake server's answer builder raised an exception; see its log."
        return {"type": "errored", "error": anthropic_error_body("api_error", message)}
    return {"type": "succeeded", "message": message_object(message_id, chat, answer, tier="batch")}
