"""BatchAPIRunner: a chain's model calls sent through the OpenAI Batch API, at half price.

``prompt | ChatOpenAI | parser`` over many inputs becomes: the prompt run locally
for every input, the model's requests uploaded as one or more jobs, the answers
downloaded when the jobs end (usually within hours), and the parser run locally
on the returned messages. The result is the same :class:`BatchResult` the online
engine returns: one :class:`ItemResult` per input, keyed by index, with the
model's token usage. Job state lives in SQLite, so a process that restarts with
the same ``state_path`` resumes polling the jobs it already paid for.

A run goes through three phases (:class:`_Run`): prepare the requests from the
local steps before the model, drive the jobs, finish with the local steps after
the model. The sync and async drivers differ only in how they run the local
steps and where the job I/O runs. ``run`` never runs the user's chain on a
private event loop: its local steps go through ``kit.batch`` (the chain's sync
path), and only the runner's own job I/O runs on a private loop, with an openai
client made for it. ``arun`` does everything on the caller's loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import openai
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableConfig

from langchain_batchkit._batch_api._chain import ChainParts, split_chain
from langchain_batchkit._batch_api._errors import BatchStateError
from langchain_batchkit._batch_api._jobs import JobLoop
from langchain_batchkit._batch_api._options import BatchAPIOptions
from langchain_batchkit._batch_api._private_loop import run_on_private_loop
from langchain_batchkit._batch_api._provider import OpenAIBatches
from langchain_batchkit._batch_api._requests import PreparedRequest, RequestBuilder
from langchain_batchkit._batch_api._responses import message_from_body
from langchain_batchkit._batch_api._state import ItemState
from langchain_batchkit._batch_api._store import JobStore, running_batch_ids
from langchain_batchkit._errors import BatchKitError, ConfigurationError
from langchain_batchkit._item import ItemError, ItemResult, TokenUsage
from langchain_batchkit._results import BatchResult
from langchain_batchkit._runner import BatchKit, batchkit

__all__ = ["BatchAPIRunner"]

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


class BatchAPIRunner(Generic[InputT, OutputT]):
    """Run a chain over many inputs with its model calls in OpenAI Batch API jobs.

    Why: the Batch API costs half as much and has its own, much larger rate limits,
    but it takes a JSONL file of raw requests, answers within 24 hours in any order,
    and can expire or fail lines. The runner hides that: it builds each request with
    ChatOpenAI's own payload code, splits jobs within the provider's limits, polls
    with backoff, maps every answer back by ``custom_id``, resubmits what failed for
    a transient reason, and returns one result per input.

    Args:
        chain: a ``ChatOpenAI`` (possibly ``.bind(...)``/``.bind_tools(...)``), or a
            ``RunnableSequence`` with exactly one such step: the steps before it run
            locally (their output is the model's input), the steps after it run
            locally on the returned ``AIMessage``. Anything else raises
            :class:`ConfigurationError` here.
        options: limits, polling, resubmission (:class:`BatchAPIOptions`).
        state_path: a SQLite file holding the run's jobs and results. A run with the
            same file (and the same inputs) resumes: it polls the jobs already created
            instead of creating them again. ``None`` keeps the state in memory.

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
    ) -> None:
        if options is not None and not isinstance(options, BatchAPIOptions):
            raise ConfigurationError(f"options must be a BatchAPIOptions, got {options!r}")
        if state_path is not None and not isinstance(state_path, str | os.PathLike):
            raise ConfigurationError(f"state_path must be a path or None, got {state_path!r}")
        self.parts: ChainParts = split_chain(chain)
        self.options = options or BatchAPIOptions()
        self.state_path = os.fspath(state_path) if state_path is not None else None
        self._builder = RequestBuilder(self.parts)
        self._live: set[str] = set()
        self._cancel_requested = False
        self._running = False

    def __repr__(self) -> str:
        return (
            f"BatchAPIRunner(model={self.parts.model.model_name!r}, state_path={self.state_path!r})"
        )

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
        with self._exclusive():
            return self._execute(_Run(self, pairs, config, self.state_path))

    async def arun(
        self, inputs: Iterable[InputT], config: RunnableConfig | None = None
    ) -> BatchResult[InputT, OutputT]:
        """Async twin of :meth:`run`: local steps and job I/O on the caller's loop."""
        pairs = list(enumerate(inputs))
        with self._exclusive():
            return await self._aexecute(_Run(self, pairs, config, self.state_path))

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
        self._cancel_requested = True
        batch_ids = set(self._live)
        if self.state_path is not None:
            batch_ids |= running_batch_ids(self.state_path)
        cancelled = []
        async with OpenAIBatches.for_model(self.parts.model, private_loop=private_loop) as api:
            for batch_id in sorted(batch_ids):
                try:
                    await api.cancel(batch_id)
                except openai.ConflictError:  # it finished meanwhile: nothing to cancel
                    continue
                cancelled.append(batch_id)
        if cancelled:
            logger.info("cancelled %d job(s): %s", len(cancelled), cancelled)
        return cancelled

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One run at a time on a state file; a new run clears an old cancellation."""
        if self._running and self.state_path is not None:
            raise BatchKitError(f"{self!r} is already running on this state file")
        self._running = True
        self._cancel_requested = False
        try:
            yield
        finally:
            self._running = False

    # -- BatchResult.retry_failed() ------------------------------------------------------

    def _rerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]:
        """Re-run some items (in new jobs, state in memory), keeping their indices."""
        return self._execute(_Run(self, list(pairs), config, None))

    async def _arerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]:
        """Async twin of :meth:`_rerun`."""
        return await self._aexecute(_Run(self, list(pairs), config, None))

    # -- the two drivers of a run's phases -----------------------------------------------

    def _execute(self, run: _Run[InputT, OutputT]) -> BatchResult[InputT, OutputT]:
        """Sync: local steps through ``kit.batch`` here; job I/O on a private loop."""
        before = run.before_model()
        run.prepare(before.kit.batch(before.inputs, run.config) if before else None)
        if run.requests:
            run_on_private_loop(run.drive(private_loop=True))
        after = run.after_model()
        return run.finish(after.kit.batch(after.inputs, run.config) if after else None)

    async def _aexecute(self, run: _Run[InputT, OutputT]) -> BatchResult[InputT, OutputT]:
        """Async: local steps through ``kit.abatch`` and job I/O, all on this loop."""
        before = run.before_model()
        run.prepare(await before.kit.abatch(before.inputs, run.config) if before else None)
        if run.requests:
            await run.drive(private_loop=False)
        after = run.after_model()
        return run.finish(await after.kit.abatch(after.inputs, run.config) if after else None)


@dataclass(frozen=True, slots=True)
class _LocalStep:
    """Local steps of the chain to run over some inputs, results keyed by position."""

    kit: BatchKit[Any, Any]
    inputs: list[Any]


class _Run(Generic[InputT, OutputT]):
    """One run's state between its phases: the drivers only choose how each runs.

    1. :meth:`before_model` names the local steps before the model; :meth:`prepare`
       builds each item's request from their results.
    2. :meth:`drive` runs the jobs (the only phase doing I/O here: the provider's
       calls and the state file).
    3. :meth:`after_model` turns answers into messages and names the local steps
       after the model; :meth:`finish` builds the results from theirs.

    A driver runs the named local steps (sync or async) and hands their results on.
    """

    __slots__ = (
        "answered_at",
        "config",
        "failed",
        "inputs",
        "items",
        "messages",
        "pairs",
        "requests",
        "runner",
        "start",
        "state_path",
    )

    def __init__(
        self,
        runner: BatchAPIRunner[InputT, OutputT],
        pairs: list[tuple[int, InputT]],
        config: RunnableConfig | None,
        state_path: str | None,
    ) -> None:
        self.runner = runner
        self.pairs = pairs
        self.config = config
        self.state_path = state_path
        self.start = runner.options.timer()
        self.inputs = dict(pairs)
        self.failed: list[ItemResult[InputT, OutputT]] = []
        self.requests: dict[int, PreparedRequest] = {}
        self.items: dict[int, ItemState] = {}
        self.messages: dict[int, AIMessage] = {}
        self.answered_at = self.start

    def _local(self, step: Runnable[Any, Any] | None, inputs: list[Any]) -> _LocalStep | None:
        if step is None or not inputs:
            return None
        kit = batchkit(
            step,
            max_concurrency=self.runner.options.local_concurrency,
            retry=None,
            progress=False,
        )
        return _LocalStep(kit, inputs)

    # -- 1. before the model -------------------------------------------------------------

    def before_model(self) -> _LocalStep | None:
        """The local steps before the model, over every input; None if there are none."""
        return self._local(self.runner.parts.pre, [x for _, x in self.pairs])

    def prepare(self, pre: BatchResult[Any, Any] | None) -> None:
        """Build each item's request from its model input (``pre``'s output, or the input)."""
        model_inputs: dict[int, Any] = {}
        if pre is None:
            model_inputs = dict(self.pairs)
        else:
            for position, (idx, x) in enumerate(self.pairs):
                done = pre.by_index(position)
                if done.error is not None:
                    self.failed.append(ItemResult(idx, x, error=done.error))
                else:
                    model_inputs[idx] = done.output
        for idx, model_input in model_inputs.items():
            try:
                self.requests[idx] = self.runner._builder.build(model_input)
            except Exception as exc:
                error = ItemError.from_exception(exc)
                self.failed.append(ItemResult(idx, self.inputs[idx], error=error))

    # -- 2. the jobs ---------------------------------------------------------------------

    async def drive(self, *, private_loop: bool) -> None:
        """Create, poll and collect the jobs of every request, through the state file.

        Args:
            private_loop: this runs on a private loop (a sync run): the client is made
                without the model's ``http_async_client`` (see :class:`OpenAIBatches`).
        """
        runner = self.runner
        store = JobStore(self.state_path)
        try:
            run_id = store.begin(n_items=len(self.pairs))
            self.items, fresh = _reconcile(store.load_items(), self.requests, self.state_path)
            store.save(items=fresh)
            jobs = store.load_jobs()
            if jobs:
                logger.info(
                    "resuming run %s from %s: %d job(s), %d still running",
                    run_id,
                    self.state_path,
                    len(jobs),
                    sum(not job.collected for job in jobs),
                )
            model = runner.parts.model
            async with OpenAIBatches.for_model(model, private_loop=private_loop) as api:
                await JobLoop(
                    run_id=run_id,
                    items=self.items,
                    jobs=jobs,
                    requests=self.requests,
                    store=store,
                    api=api,
                    options=runner.options,
                    live=runner._live,
                    cancelled=lambda: runner._cancel_requested,
                ).drive()
        finally:
            store.close()

    # -- 3. after the model --------------------------------------------------------------

    def after_model(self) -> _LocalStep | None:
        """Turn answers into messages; the local steps after the model, over them."""
        runner = self.runner
        now = self.answered_at = runner.options.timer()
        for idx, state in sorted(self.items.items()):
            error = state.error
            if state.status == "succeeded" and state.response is not None:
                try:
                    self.messages[idx] = message_from_body(
                        runner.parts.model, runner._builder, state.response
                    )
                    continue
                except Exception as exc:
                    error = ItemError.from_exception(exc)
            self.failed.append(
                _result(state, self.inputs[idx], None, error, None, now - self.start)
            )
        return self._local(runner.parts.post, list(self.messages.values()))

    def finish(self, post: BatchResult[Any, Any] | None) -> BatchResult[InputT, OutputT]:
        """The run's results: each message through ``post`` (if any), and every failure."""
        results = list(self.failed)
        for position, (idx, message) in enumerate(self.messages.items()):
            output: object = message
            error: ItemError | None = None
            if post is not None:
                done = post.by_index(position)
                output, error = done.output, done.error
            state = self.items[idx]
            latency = (state.finished_at or self.answered_at) - self.start
            usage = TokenUsage.from_output(message)
            results.append(_result(state, self.inputs[idx], output, error, usage, latency))
        return BatchResult(
            results,
            wall_time=self.runner.options.timer() - self.start,
            rerunner=self.runner,
            config=self.config,
        )


def _result(
    state: ItemState,
    input: InputT,
    output: object,
    error: ItemError | None,
    usage: TokenUsage | None,
    latency: float,
) -> ItemResult[InputT, OutputT]:
    return ItemResult(
        index=state.index,
        input=input,
        output=cast(OutputT, output) if error is None else None,
        error=error,
        attempts=max(1, state.submissions),
        latency=max(0.0, latency),
        usage=usage,
        history=tuple(state.history),
    )


def _reconcile(
    stored: Mapping[int, ItemState],
    requests: Mapping[int, PreparedRequest],
    state_path: str | None,
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
            state = ItemState(idx, request.digest)
            fresh.append(state)
        elif state.digest != request.digest:
            raise BatchStateError(
                f"the request of input {idx} differs from the one recorded in {state_path!r} "
                "(other inputs, prompt, model or parameters): use a new state file"
            )
        items[idx] = state
    return items, fresh
