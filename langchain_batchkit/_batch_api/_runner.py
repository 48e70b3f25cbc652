"""BatchAPIRunner: a chain's model calls sent through the OpenAI Batch API, at half price.

``prompt | ChatOpenAI | parser`` over many inputs becomes: the prompt run locally
for every input, the model's requests uploaded as one or more jobs, the answers
downloaded when the jobs end (usually within hours), and the parser run locally
on the returned messages. The result is the same :class:`BatchResult` the online
engine returns: one :class:`ItemResult` per input, keyed by index, with the
model's token usage. Job state lives in SQLite, so a process that restarts with
the same ``state_path`` resumes polling the jobs it already paid for.

A run goes through three phases (``ApiRun``, in ``_run.py``): prepare the requests from the
local steps before the model, drive the jobs, finish with the local steps after
the model. The sync and async drivers differ only in how they run the local
steps and where the job I/O runs. ``run`` never runs the user's chain on a
private event loop: its local steps go through ``kit.batch`` (the chain's sync
path), and only the runner's own job I/O runs on a private loop, with an openai
client made for it. ``arun`` does everything on the caller's loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from langchain_core.runnables import Runnable, RunnableConfig

from langchain_batchkit._batch_api._chain import ChainPlan, split_chain
from langchain_batchkit._batch_api._drive import JobControl
from langchain_batchkit._batch_api._jobapi import JobClient
from langchain_batchkit._batch_api._options import BatchAPIOptions
from langchain_batchkit._batch_api._private_loop import run_on_private_loop
from langchain_batchkit._batch_api._rounds import REASK_STRIDE
from langchain_batchkit._batch_api._run import ApiRun
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._reask import Reask
from langchain_batchkit._results import BatchResult

__all__ = ["BatchAPIRunner"]

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


class BatchAPIRunner(Generic[InputT, OutputT]):
    """Run a chain over many inputs with its model calls in provider Batch API jobs.

    Why: a Batch API costs half as much and has its own, much larger rate limits,
    but it takes a file of raw requests, answers within 24 hours in any order, and
    can expire or fail lines. The runner hides that: it builds each request with the
    model's own LangChain payload code, splits jobs within the provider's limits,
    polls with backoff, maps every answer back by ``custom_id``, resubmits what
    failed for a transient reason, and returns one result per input.

    Args:
        chain: a chat model (``ChatOpenAI``, ``AzureChatOpenAI``, ``ChatAnthropic``;
            possibly ``.bind(...)``/``.bind_tools(...)``), or a ``RunnableSequence``
            of local steps and such models. The steps before the first model run
            locally (their output is the model's input), the steps after a model run
            locally on its ``AIMessage``. Each model step is one *round* of jobs over
            the items still alive: ``prompt | llm | parser | prompt2 | llm2`` runs in
            two rounds, and an item that failed in the first takes no part in the
            second. A model the runner cannot reach (inside a parallel) raises
            :class:`ConfigurationError` here; a model called from inside a function
            cannot be seen: it runs online at the full price, and the run logs a
            warning when it does.
        options: limits, polling, resubmission (:class:`BatchAPIOptions`).
        state_path: a SQLite file holding the run's jobs and results. A run with the
            same file (and the same inputs) resumes: it polls the jobs already created
            instead of creating them again, and does not send a finished round again.
            ``None`` keeps the state in memory.
        reask: re-ask answers that fail to parse (:class:`Reask`): each re-ask is one
            more round of the same model step over only those items, sending the
            original messages, the rejected answer and the error.
        progress: a ``tqdm.auto`` bar per round, over its requests, moving as jobs end
            (``None``: from 10 requests on; ``False``: none).

    Example:
        >>> runner = BatchAPIRunner(prompt | ChatOpenAI(model="gpt-4o-mini") | parser,
        ...                         state_path="reviews.sqlite")       # doctest: +SKIP
        >>> results = runner.run(reviews)                              # doctest: +SKIP
        >>> results.outputs, results.summary()                         # doctest: +SKIP
    """

    def __init__(
        self,
        chain: Runnable[InputT, OutputT],
        *,
        options: BatchAPIOptions | None = None,
        state_path: str | os.PathLike[str] | None = None,
        reask: Reask | None = None,
        progress: bool | None = None,
    ) -> None:
        if options is not None and not isinstance(options, BatchAPIOptions):
            raise ConfigurationError(f"options must be a BatchAPIOptions, got {options!r}")
        if state_path is not None and not isinstance(state_path, str | os.PathLike):
            raise ConfigurationError(f"state_path must be a path or None, got {state_path!r}")
        self.plan: ChainPlan = split_chain(chain)
        self.reask = _checked_reask(reask, self.plan)
        if progress is not None and not isinstance(progress, bool):
            raise ConfigurationError(f"progress must be a bool or None, got {progress!r}")
        self.progress = progress
        self.options = options or BatchAPIOptions()
        self.state_path = os.fspath(state_path) if state_path is not None else None
        self._control = JobControl()

    def __repr__(self) -> str:
        models = ", ".join(repr(step.backend.model_name) for step in self.plan.steps)
        return f"BatchAPIRunner(model={models}, state_path={self.state_path!r})"

    # -- entry points --------------------------------------------------------------------

    def run(
        self, inputs: Iterable[InputT], config: RunnableConfig | None = None
    ) -> BatchResult[InputT, OutputT]:
        """Run every input through the chain, its model calls as Batch API jobs.

        Blocks until every job has ended (hours, for a real job); works inside a
        running event loop too (a Jupyter cell). Never raises because an item failed:
        rejected requests, expired or cancelled jobs and parser errors are item errors.

        The local steps run on the chain's sync path (``kit.batch``), never on a
        private event loop, so the chain's cached clients stay usable from the
        caller's own loop. Only the job I/O runs on a private loop, through a client
        made for this run: the model's ``http_async_client``, if it brought one, is
        bound to the caller's loop and is not used; a default one is made instead
        (use :meth:`arun` for that client's proxy or TLS settings to apply). A
        KeyboardInterrupt while waiting cancels the job loop (the jobs keep running
        at the provider; a run with the same ``state_path`` resumes them) and
        propagates.

        Args:
            inputs: the chain's inputs (read into a list: every request is needed up front).
            config: RunnableConfig for the local steps (callbacks, tags, metadata).
        """
        pairs = list(enumerate(inputs))
        with self._control.exclusive(self, self.state_path):
            return self._execute(ApiRun(self, pairs, config, self.state_path))

    async def arun(
        self, inputs: Iterable[InputT], config: RunnableConfig | None = None
    ) -> BatchResult[InputT, OutputT]:
        """Async twin of :meth:`run`: local steps and job I/O on the caller's loop."""
        pairs = list(enumerate(inputs))
        with self._control.exclusive(self, self.state_path):
            return await self._aexecute(ApiRun(self, pairs, config, self.state_path))

    def cancel(self) -> list[str]:
        """Cancel the jobs of the running run and of the state file that are not finished.

        A run waiting on them then ends with their unfinished items as
        :class:`BatchJobUnfinishedError` errors (status ``"cancelled"``); answers that
        arrived before the cancellation are kept. Returns the cancelled job ids. The
        calls run on a private loop, with a client made for them (as in :meth:`run`).
        """
        return run_on_private_loop(self._cancel_jobs(private_loop=True))

    async def acancel(self) -> list[str]:
        """Async twin of :meth:`cancel`."""
        return await self._cancel_jobs(private_loop=False)

    async def _cancel_jobs(self, *, private_loop: bool) -> list[str]:
        steps = self.plan.steps

        def client(round: int) -> JobClient:
            # a re-ask round is its model step's: step + REASK_STRIDE * attempt
            step = steps[min(round % REASK_STRIDE, len(steps) - 1)]
            return step.backend.client(private_loop=private_loop)

        return await self._control.cancel(client, self.state_path)

    # -- BatchResult.retry_failed() ------------------------------------------------------

    def _rerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]:
        """Re-run some items (in new jobs, state in memory), keeping their indices."""
        with self._control.exclusive(self, None):  # clears an earlier cancel()
            return self._execute(ApiRun(self, list(pairs), config, None))

    async def _arerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]:
        """Async twin of :meth:`_rerun`."""
        with self._control.exclusive(self, None):
            return await self._aexecute(ApiRun(self, list(pairs), config, None))

    # -- the two drivers of a run's phases -----------------------------------------------

    def _execute(self, run: ApiRun[InputT, OutputT]) -> BatchResult[InputT, OutputT]:
        """Sync: local steps through ``kit.batch`` here; job I/O on a private loop."""
        try:
            return self._rounds(run)
        finally:
            run.close()

    async def _aexecute(self, run: ApiRun[InputT, OutputT]) -> BatchResult[InputT, OutputT]:
        """Async: local steps through ``kit.abatch`` and job I/O, all on this loop."""
        try:
            return await self._arounds(run)
        finally:
            run.close()

    def _rounds(self, run: ApiRun[InputT, OutputT]) -> BatchResult[InputT, OutputT]:
        before = run.before_model()
        run.begin(before.kit.batch(before.inputs, run.local_config) if before else None)
        while run.next_round():
            if run.requests:
                run_on_private_loop(run.drive(private_loop=True))
            after = run.after_model()
            run.advance(after.kit.batch(after.inputs, run.local_config) if after else None)
        return run.finish()

    async def _arounds(self, run: ApiRun[InputT, OutputT]) -> BatchResult[InputT, OutputT]:
        before = run.before_model()
        run.begin(await before.kit.abatch(before.inputs, run.local_config) if before else None)
        while run.next_round():
            if run.requests:
                await run.drive(private_loop=False)
            after = run.after_model()
            run.advance(await after.kit.abatch(after.inputs, run.local_config) if after else None)
        return run.finish()


def _checked_reask(reask: object, plan: ChainPlan) -> Reask | None:
    """``reask`` if it can work on ``plan``.

    Raises:
        ConfigurationError: not a :class:`Reask`, or no model step is followed by a
            step that parses its answer (so no answer can fail to parse).
    """
    if reask is None:
        return None
    if not isinstance(reask, Reask):
        raise ConfigurationError(f"reask must be a Reask or None, got {reask!r}")
    if reask.max_attempts >= REASK_STRIDE:
        raise ConfigurationError(
            f"Reask.max_attempts must be below {REASK_STRIDE} for BatchAPIRunner, "
            f"got {reask.max_attempts}"
        )
    if all(step.post is None for step in plan.steps):
        raise ConfigurationError(
            "reask= needs a model step whose answer a later step parses, e.g. prompt | "
            "llm.with_structured_output(Schema) or prompt | llm | PydanticOutputParser(...); "
            "nothing after the model parses its answer here, so no answer can fail to parse"
        )
    return reask
