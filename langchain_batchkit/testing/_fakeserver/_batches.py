"""Batch jobs: an in-memory store whose status is computed from the clock when read.

Nothing runs in the background. A batch created at ``t0`` with ``n`` lines has a
timeline fixed at creation: its lines, shuffled with a per-batch RNG derived from
``seed``, finish one after another, line ``k`` at ``t0 + delay * (k + 1) / n``
(``delay`` is ``batch_completion_delay``), and the batch ends at ``t0 + delay``.
Every read (retrieve, list, cancel) places the batch on that timeline at
``clock()``: lines whose time has come are run then (so ``response_text`` sees only
lines that really ran), and a batch found in a final state writes its output and
error files once. A test with a fake clock therefore advances time and retrieves,
and never waits.

Statuses: ``create`` answers ``validating`` (as OpenAI does); afterwards a batch is
``failed`` (its input did not validate), ``in_progress``, then ``completed`` or,
with ``batch_expired_fraction``, ``expired``. ``cancel`` answers ``cancelling``;
lines finished by then are kept, the rest are dropped from both files, and the batch
reads ``cancelled`` ``batch_cancel_delay`` seconds later.

A batch holds its lines' prompt tokens enqueued for its model until it is final;
with ``batch_max_enqueued_tokens``, one that would take its model over the limit
is ``failed`` with ``token_limit_exceeded`` from the start (OpenAI's message).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from langchain_batchkit.testing._fakeserver._batch_exec import (
    LineResult,
    expired_record,
    line_prompt_tokens,
    run_line,
)
from langchain_batchkit.testing._fakeserver._batch_input import (
    BatchError,
    BatchLine,
    parse_batch_input,
)
from langchain_batchkit.testing._fakeserver._config import EPSILON, FakeServerConfig
from langchain_batchkit.testing._fakeserver._exchange import ApiError, InvalidRequest
from langchain_batchkit.testing._fakeserver._files import FileStore, WallClock
from langchain_batchkit.testing._fakeserver._pages import cursor_page
from langchain_batchkit.testing._fakeserver._stats import Counters

__all__ = ["BatchStatus", "BatchStore"]

BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]

_WINDOW_SECONDS = 24 * 60 * 60
_UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")


@dataclass(frozen=True, slots=True)
class _Phase:
    """Where a batch is on its timeline: status, lines that ran, and since when."""

    status: BatchStatus
    finished: int
    since: float


@dataclass(slots=True, eq=False)
class _Batch:
    """A batch's fixed plan and its mutable progress; guarded by the store's lock."""

    number: int
    id: str
    input_file_id: str
    endpoint: str
    metadata: Mapping[str, str] | None
    model: str | None
    created: float
    errors: tuple[BatchError, ...]
    lines: tuple[BatchLine, ...]  # in processing (shuffled) order
    tokens: int  # enqueued while unfinished
    server_errors: tuple[bool, ...]
    runnable: int  # lines[:runnable] run; the rest expire
    results: list[LineResult] = field(default_factory=list)
    cancel_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    written: bool = False


class BatchStore:
    """Thread-safe batches for the Batch API routes; see the module docstring."""

    __slots__ = ("_batches", "_config", "_counters", "_files", "_lock", "_numbers", "_wall")

    def __init__(
        self, config: FakeServerConfig, files: FileStore, counters: Counters, wall: WallClock
    ) -> None:
        self._config = config
        self._files = files
        self._counters = counters
        self._wall = wall
        self._lock = threading.Lock()
        self._batches: dict[str, _Batch] = {}
        self._numbers = itertools.count(1)

    def create(
        self, *, input_file_id: str, endpoint: str, metadata: Mapping[str, str] | None
    ) -> dict[str, object]:
        """Validate the input file and plan the batch; answers it as ``validating``."""
        config = self._config
        stored = self._files.get(input_file_id)
        if stored.purpose != "batch":
            raise InvalidRequest(
                f"The input file {input_file_id} has purpose {stored.purpose!r}; "
                "a batch needs a file uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        parsed = parse_batch_input(
            stored.data, endpoint=endpoint, max_requests=config.batch_max_requests
        )
        with self._lock:
            errors, tokens = self._enqueue(parsed.errors, parsed.lines, parsed.model, endpoint)
            number = next(self._numbers)
            rng = random.Random(f"{config.seed}/batch/{number}")
            lines = list(parsed.lines)
            rng.shuffle(lines)
            rate = config.batch_line_error_rate
            expired = math.ceil(len(lines) * config.batch_expired_fraction)
            batch = _Batch(
                number=number,
                id=f"batch_fake{number:012d}",
                input_file_id=input_file_id,
                endpoint=endpoint,
                metadata=metadata,
                model=parsed.model,
                created=self._wall.now(),
                errors=errors,
                lines=tuple(lines),
                tokens=tokens,
                server_errors=tuple(rate > 0 and rng.random() < rate for _ in lines),
                runnable=len(lines) - expired,
            )
            self._batches[batch.id] = batch
            self._counters.record_batch_created()
            return self._to_json(batch, _Phase("validating", 0, batch.created))

    def _enqueue(
        self,
        errors: tuple[BatchError, ...],
        lines: tuple[BatchLine, ...],
        model: str | None,
        endpoint: str,
    ) -> tuple[tuple[BatchError, ...], int]:
        """A new batch's errors and enqueued tokens: refused when it would take its model
        over ``batch_max_enqueued_tokens``."""
        if errors:
            return errors, 0
        tokens = sum(line_prompt_tokens(line, self._config, endpoint) for line in lines)
        now = self._wall.now()
        enqueued = tokens + sum(
            batch.tokens
            for batch in self._batches.values()
            if batch.model == model and self._phase(batch, now).status in _UNFINISHED
        )
        limit = self._config.batch_max_enqueued_tokens
        if limit is not None and enqueued > limit:
            self._counters.record_enqueued_refusal()
            message = (
                f"Enqueued token limit reached for {model} in organization org-fake. "
                f"Limit: {limit:,} enqueued tokens. Please try submitting fewer tasks or "
                "waiting until your in-progress batches complete before submitting more."
            )
            return (BatchError("token_limit_exceeded", message),), 0
        self._counters.record_enqueued(enqueued)
        return errors, tokens

    def retrieve(self, batch_id: str) -> dict[str, object]:
        with self._lock:
            batch = self._get(batch_id)
            return self._to_json(batch, self._observe(batch))

    def cancel(self, batch_id: str) -> dict[str, object]:
        """Stop an in-progress batch; lines already finished keep their results."""
        with self._lock:
            batch = self._get(batch_id)
            phase = self._observe(batch)
            if phase.status in ("cancelling", "cancelled"):
                return self._to_json(batch, phase)
            if phase.status != "in_progress":
                raise ApiError(409, f"Cannot cancel a batch with status '{phase.status}'.")
            now = self._wall.now()
            batch.cancel_at = now
            return self._to_json(batch, _Phase("cancelling", phase.finished, now))

    def page(self, *, limit: int, after: str | None) -> dict[str, object]:
        """Batches newest first, as ``GET /v1/batches`` lists them."""
        with self._lock:
            items = [
                (batch.id, self._to_json(batch, self._observe(batch)))
                for batch in reversed(self._batches.values())
            ]
        return cursor_page(items, after=after, limit=limit, kind="Batch")

    # ------------------------------------------------------------------ timeline

    def _get(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No such Batch object: {batch_id}", param="batch_id")
        return batch

    def _phase(self, batch: _Batch, now: float) -> _Phase:
        if batch.errors:
            return _Phase("failed", 0, batch.created)
        delay = self._config.batch_completion_delay
        if batch.cancel_at is not None:
            finished = self._finished_by(batch, batch.cancel_at)
            cancelled_at = batch.cancel_at + self._config.batch_cancel_delay
            if now + EPSILON >= cancelled_at:
                return _Phase("cancelled", finished, cancelled_at)
            return _Phase("cancelling", finished, batch.cancel_at)
        end = batch.created + delay
        if now + EPSILON >= end:
            status: BatchStatus = "expired" if batch.runnable < len(batch.lines) else "completed"
            return _Phase(status, batch.runnable, end)
        return _Phase("in_progress", self._finished_by(batch, now), batch.created)

    def _finished_by(self, batch: _Batch, moment: float) -> int:
        delay = self._config.batch_completion_delay
        if delay <= 0:
            return batch.runnable
        share = (moment - batch.created) / delay * len(batch.lines)
        return max(0, min(batch.runnable, math.floor(share + EPSILON)))

    def _observe(self, batch: _Batch) -> _Phase:
        """Place the batch at ``clock()``: run lines that are due, write final files."""
        phase = self._phase(batch, self._wall.now())
        self._run_until(batch, phase.finished)
        if phase.status in ("completed", "expired", "cancelled") and not batch.written:
            self._write_files(batch, phase)
        return phase

    def _run_until(self, batch: _Batch, finished: int) -> None:
        start = len(batch.results)
        for k in range(start, finished):
            key = _line_key(batch, k)
            batch.results.append(
                run_line(
                    batch.lines[k],
                    self._config,
                    record_id=f"batch_req_{key}",
                    request_id=f"req_fakebatch{key}",
                    completion_id=f"chatcmpl-fakebatch{key}",
                    created=self._wall.unix(self._finish_time(batch, k)),
                    server_error=batch.server_errors[k],
                    endpoint=batch.endpoint,
                )
            )
        self._counters.record_batch_lines(max(0, finished - start))

    def _finish_time(self, batch: _Batch, k: int) -> float:
        share = (k + 1) / len(batch.lines)
        return batch.created + self._config.batch_completion_delay * share

    def _write_files(self, batch: _Batch, phase: _Phase) -> None:
        outputs = [json.dumps(r.record()) for r in batch.results if r.ok]
        errors = [json.dumps(r.record()) for r in batch.results if not r.ok]
        if phase.status == "expired":
            errors += [
                json.dumps(expired_record(f"batch_req_{_line_key(batch, k)}", line.custom_id))
                for k, line in enumerate(batch.lines[batch.runnable :], start=batch.runnable)
            ]
        created_at = self._wall.unix(phase.since)
        for records, kind in ((outputs, "output"), (errors, "error")):
            if not records:
                continue
            stored = self._files.add(
                filename=f"{batch.id}_{kind}.jsonl",
                purpose="batch_output",
                data=("\n".join(records) + "\n").encode(),
                created_at=created_at,
            )
            if kind == "output":
                batch.output_file_id = stored.id
            else:
                batch.error_file_id = stored.id
        batch.written = True

    # ------------------------------------------------------------------ JSON

    def _to_json(self, batch: _Batch, phase: _Phase) -> dict[str, object]:
        unix = self._wall.unix
        status = phase.status
        ran = batch.results[: phase.finished]
        succeeded = sum(1 for r in ran if r.ok)
        failed = len(ran) - succeeded
        if status == "expired":
            failed += len(batch.lines) - batch.runnable
        counted = status not in ("validating", "failed")
        started = unix(batch.created) if counted else None
        stamp = unix(phase.since)
        input_tokens = sum(r.prompt_tokens for r in ran)
        output_tokens = sum(r.completion_tokens for r in ran)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "model": batch.model,
            "errors": (
                {"object": "list", "data": [e.to_json() for e in batch.errors]}
                if batch.errors
                else None
            ),
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": unix(batch.created),
            "in_progress_at": started,
            "expires_at": unix(batch.created) + _WINDOW_SECONDS,
            "finalizing_at": stamp if status == "completed" else None,
            "completed_at": stamp if status == "completed" else None,
            "failed_at": stamp if status == "failed" else None,
            "expired_at": stamp if status == "expired" else None,
            "cancelling_at": (
                unix(batch.cancel_at) if batch.cancel_at is not None and counted else None
            ),
            "cancelled_at": stamp if status == "cancelled" else None,
            "request_counts": {
                "total": len(batch.lines) if counted else 0,
                "completed": succeeded,
                "failed": failed,
            },
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "metadata": dict(batch.metadata) if batch.metadata is not None else None,
        }


def _line_key(batch: _Batch, k: int) -> str:
    """The unique suffix of the ids of a batch's ``k``-th line (in processing order)."""
    return f"{batch.number:06d}{k:08d}"
