"""Driving a run's jobs through its state file: what the chat runner and embeddings share.

:func:`drive_jobs` opens the state file, reconciles the items of this run with
the ones it recorded (a resumed run polls the jobs it already paid for), and runs
the :class:`JobLoop` to the end. :class:`JobControl` is the run-wide switchboard
``cancel()`` needs: the jobs running now, whether cancel was asked, and one run
at a time per state file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping

from langchain_batchkit._batch_api._errors import BatchStateError
from langchain_batchkit._batch_api._jobapi import JobClient
from langchain_batchkit._batch_api._jobs import AnswerSink, JobLoop
from langchain_batchkit._batch_api._options import BatchAPIOptions
from langchain_batchkit._batch_api._queue import JobQueue
from langchain_batchkit._batch_api._queue_store import QueueStore
from langchain_batchkit._batch_api._requests import PreparedRequest
from langchain_batchkit._batch_api._state import ItemState
from langchain_batchkit._batch_api._store import JobStore, running_batch_ids
from langchain_batchkit._errors import BatchKitError

__all__ = ["JobControl", "drive_jobs"]

logger = logging.getLogger(__name__)


class JobControl:
    """What a runner's ``cancel()`` shares with its running run.

    Attributes:
        live: provider ids of the jobs running now, with their rounds.
        seen: provider ids of every job the runner created or found, in any round or
            run: never adopted for another job after a crash.
        cancel_requested: ``cancel()`` was called (no new job is created).
    """

    __slots__ = ("cancel_requested", "live", "running", "seen")

    def __init__(self) -> None:
        self.live: dict[str, int] = {}
        self.seen: set[str] = set()
        self.cancel_requested = False
        self.running = False

    @contextlib.contextmanager
    def exclusive(self, owner: object, state_path: str | None) -> Iterator[None]:
        """One run at a time on a state file; a new run clears an old cancellation."""
        if self.running and state_path is not None:
            raise BatchKitError(f"{owner!r} is already running on this state file")
        self.running = True
        self.cancel_requested = False
        try:
            yield
        finally:
            self.running = False

    async def cancel(self, api: Callable[[int], JobClient], state_path: str | None) -> list[str]:
        """Cancel the running jobs and those the state file holds as running.

        Args:
            api: the client of a round's provider.
            state_path: the run's state file, if any.
        """
        self.cancel_requested = True
        batch_ids = dict(self.live)
        if state_path is not None:
            batch_ids.update(running_batch_ids(state_path))
        cancelled = []
        for round in sorted(set(batch_ids.values())):
            async with api(round) as client:
                for batch_id in sorted(b for b, r in batch_ids.items() if r == round):
                    if await client.cancel(batch_id):
                        cancelled.append(batch_id)
        if cancelled:
            logger.info("cancelled %d job(s): %s", len(cancelled), cancelled)
        return cancelled


async def drive_jobs(
    *,
    state_path: str | None,
    n_items: int,
    requests: Mapping[int, PreparedRequest],
    api: Callable[[], JobClient],
    options: BatchAPIOptions,
    control: JobControl,
    sink: AnswerSink | None = None,
    round: int = 0,
    queue_path: str | None = None,
    on_counts: Callable[[int, int], None] | None = None,
) -> dict[int, ItemState]:
    """Create, poll and collect the jobs of ``requests``; every item's final state.

    Jobs go through the enqueued-token queue of ``options.queue_path``, or of the
    state file when it names none, or of ``queue_path`` (see :mod:`._queue`).

    Args:
        state_path: the SQLite state file (``None``: in memory).
        n_items: the run's input count, recorded in the file to refuse other inputs.
        requests: each item's request, by input index (items without one are not sent).
        api: makes the provider calls' client, inside the loop that runs them.
        options: limits, polling and resubmission.
        control: shared with ``cancel()``.
        sink: what the file keeps of answers (see :data:`AnswerSink`).
        round: the round of the run these requests are (see :mod:`._run`).
        queue_path: the queue file when neither ``options.queue_path`` nor
            ``state_path`` names one (a run without a state file keeps what its queue
            learned from one round to the next there).
        on_counts: told after every check how many items succeeded and failed so far.

    Raises:
        BatchStateError: the file belongs to other inputs or requests.
    """
    store = JobStore(state_path)
    try:
        queue_store = QueueStore(options.queue_path or state_path or queue_path)
    except BaseException:
        store.close()
        raise
    try:
        run_id = store.begin(n_items=n_items)
        items, fresh = _reconcile(store.load_items(round), requests, state_path, round)
        store.save(items=fresh)
        jobs = store.load_jobs(round)
        if jobs:
            logger.info(
                "resuming run %s (round %d) from %s: %d job(s), %d still running",
                run_id,
                round,
                state_path,
                len(jobs),
                sum(not job.collected for job in jobs),
            )
        async with api() as client:
            await JobLoop(
                run_id=run_id,
                items=items,
                jobs=jobs,
                requests=requests,
                store=store,
                api=client,
                options=options,
                live=control.live,
                cancelled=lambda: control.cancel_requested,
                queue=JobQueue(queue_store, owner=run_id, requests=requests, options=options),
                sink=sink,
                round=round,
                seen=control.seen,
                on_counts=on_counts,
            ).drive()
        return items
    finally:
        queue_store.close()
        store.close()


def _reconcile(
    stored: Mapping[int, ItemState],
    requests: Mapping[int, PreparedRequest],
    state_path: str | None,
    round: int,
) -> tuple[dict[int, ItemState], list[ItemState]]:
    """The items of this run: stored ones as they were, new ones pending.

    Raises:
        BatchStateError: an item's request differs from the one the file recorded
            (other inputs, another prompt or model): resuming would mix two runs.
    """
    items: dict[int, ItemState] = {}
    fresh: list[ItemState] = []
    for idx, request in requests.items():
        state = stored.get(idx)
        if state is None:
            state = ItemState(idx, request.digest, round=round)
            fresh.append(state)
        elif state.digest != request.digest:
            raise BatchStateError(
                f"the request of input {idx} differs from the one recorded in {state_path!r} "
                "(other inputs, prompt, model or parameters): use a new state file"
            )
        items[idx] = state
    return items, fresh
