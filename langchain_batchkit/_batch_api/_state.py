"""Where every item and job of a Batch API run stands; transitions without I/O.

An item goes ``pending`` -> ``submitted`` (in a job) -> ``succeeded`` or
``failed``, or back to ``pending`` when its request failed for a reason worth a
resubmission and it has submissions left. A job goes from ``uploading`` through
the provider's statuses until it is ``collected`` (its files read, its items
settled). The store persists these values; the runner drives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_batchkit._batch_api._errors import BatchJobUnfinishedError, is_resubmittable
from langchain_batchkit._batch_api._jobapi import JobView, LineOutcome
from langchain_batchkit._batch_api._responses import not_run
from langchain_batchkit._item import Attempt, ItemError

__all__ = ["ItemState", "ItemStatus", "JobState", "custom_id", "job_key", "settle_lines"]

ItemStatus = Literal["pending", "submitted", "succeeded", "failed"]


def custom_id(round: int, state: ItemState, tag: str = "") -> str:
    """``index-submission``, with the round first after the first round, and the run's
    ``tag`` first when given (custom_ids are unique within a job; Anthropic allows 64
    letters, digits, ``-`` and ``_``).

    Example:
        >>> custom_id(0, ItemState(7, "d")), custom_id(1000, ItemState(7, "d"), "3fa9")
        ('7-1', '3fa9-r1000-7-1')
    """
    head = f"{tag}-" if tag else ""
    head += f"r{round}-" if round else ""
    return f"{head}{state.index}-{state.submissions + 1}"


def job_key(round: int, number: int) -> str:
    """The runner's name for a job: ``job-00001`` in the first round, ``r2-job-00001`` later.

    Example:
        >>> job_key(0, 1), job_key(2, 12)
        ('job-00001', 'r2-job-00012')
    """
    return f"r{round}-job-{number:05d}" if round else f"job-{number:05d}"


@dataclass(slots=True, eq=False)
class ItemState:
    """One item's progress through jobs.

    Attributes:
        index: the input's index.
        digest: its request's digest (see :class:`PreparedRequest`).
        status: where it stands.
        submissions: how many jobs it was sent in.
        job: the key of the job it was last sent in.
        response: the answer body, once it succeeded.
        error: the latest error (kept while pending a resubmission).
        retryable: whether ``error`` is worth a resubmission.
        history: earlier submissions, oldest first, as :class:`Attempt` records
            (their errors; a submission has no latency of its own).
        finished_at: clock time it was settled in this process (for latency).
        round: the round of the run it belongs to (0: the first model step).
    """

    index: int
    digest: str
    status: ItemStatus = "pending"
    submissions: int = 0
    job: str | None = None
    response: dict[str, Any] | None = None
    error: ItemError | None = None
    retryable: bool = False
    history: list[Attempt] = field(default_factory=list)
    finished_at: float | None = None
    round: int = 0

    def submit(self, job: str) -> None:
        """Sent in ``job``: an earlier error moves to ``history``."""
        if self.error is not None:
            self.history.append(Attempt(self.error))
        self.error, self.retryable = None, False
        self.status, self.job = "submitted", job
        self.submissions += 1

    def withdraw(self) -> None:
        """Its job was refused before anything ran (the provider's enqueued-token cap):
        pending again as before :meth:`submit`, so the refusal costs no submission.

        Example:
            >>> state = ItemState(0, "digest")
            >>> state.submit("job-00001"); state.withdraw()
            >>> (state.status, state.submissions)
            ('pending', 0)
        """
        self.status = "pending"
        self.submissions = max(0, self.submissions - 1)
        if self.submissions and self.error is None and self.history:
            self.error, self.retryable = self.history.pop().error, True

    def succeed(self, body: dict[str, Any], now: float) -> None:
        self.status, self.response, self.finished_at = "succeeded", body, now

    def fail(self, exc: Exception, *, max_resubmits: int, now: float) -> None:
        """Record ``exc``; back to ``pending`` when it is worth another job and allowed."""
        self.error = ItemError.from_exception(exc)
        self.retryable = is_resubmittable(exc)
        again = self.retryable and self.submissions <= max_resubmits
        self.status = "pending" if again else "failed"
        self.finished_at = None if again else now


@dataclass(slots=True, eq=False)
class JobState:
    """One provider job: the items it carries and how far it got.

    Attributes:
        key: the runner's name for it (``job-0001``), set before anything is uploaded.
        members: custom_id -> item index, in the input file's line order.
        batch_id: the provider's id, once created.
        input_file_id: the uploaded input file, once uploaded.
        status: ``uploading`` until created, then the provider's last status.
        collected: its results were read and its items settled.
        round: the round of the run it belongs to.
        created_after: unix time just before its creation was first asked (finds it
            again at providers without job metadata).
    """

    key: str
    members: dict[str, int]
    batch_id: str | None = None
    input_file_id: str | None = None
    status: str = "uploading"
    collected: bool = False
    round: int = 0
    created_after: float | None = None

    def carried(self, items: Mapping[int, ItemState]) -> dict[str, int]:
        """custom_id -> index of the items this job still carries (sent in it, unsettled)."""
        return {
            cid: idx
            for cid, idx in self.members.items()
            if (state := items.get(idx)) is not None
            and state.status == "submitted"
            and state.job == self.key
        }


def settle_lines(
    job: JobState,
    view: JobView,
    items: Mapping[int, ItemState],
    *,
    carried: Mapping[str, int],
    outcomes: dict[str, LineOutcome],
    kept: Mapping[int, dict[str, Any] | Exception],
    max_resubmits: int,
    now: float,
) -> tuple[list[ItemState], int, list[int]]:
    """Settle each item a final job still carried, from its result line.

    Args:
        job: the job.
        view: where the provider says it ended.
        items: the run's items, by index.
        carried: custom_id -> index of the items the job still carries.
        outcomes: its result lines by custom_id; the lines used are taken out (what is
            left carried custom_ids the job did not send).
        kept: what the state file keeps of each answer, by index (a body, or an
            exception that fails the item).
        max_resubmits: submissions an item may have after its first.
        now: the time items are settled at.

    Returns:
        The items settled, how many succeeded, and the indices of those whose request
        never ran (the job ended before it).
    """
    settled: list[ItemState] = []
    unfinished: list[int] = []
    ok = 0
    for line, (cid, idx) in enumerate(job.members.items(), start=1):
        if cid not in carried:
            continue
        state = items[idx]
        outcome = outcomes.pop(cid, None)
        answer = kept.get(idx)
        if isinstance(answer, dict):
            state.succeed(answer, now)
            ok += 1
        else:
            error: Exception | None = answer
            if error is None and outcome is not None:
                error = outcome.error
            if error is None:
                error = not_run(view, line)
            if isinstance(error, BatchJobUnfinishedError):
                unfinished.append(idx)
            state.fail(error, max_resubmits=max_resubmits, now=now)
        settled.append(state)
    return settled, ok, unfinished
