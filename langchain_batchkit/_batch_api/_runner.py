"""BatchAPIRunner: a chain's model calls sent through the OpenAI Batch API, at half price.

``prompt | ChatOpenAI | parser`` over many inputs becomes: the prompt run locally
for every input, the model's requests uploaded as one or more jobs, the answers
downloaded when the jobs end (usually within hours), and the parser run locally
on the returned messages. The result is the same :class:`BatchResult` the online
engine returns: one :class:`ItemResult` per input, keyed by index, with the
model's token usage. Job state lives in SQLite, so a process that restarts with
the same ``state_path`` resumes polling the jobs it already paid for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

import openai
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableConfig

from langchain_batchkit._batch_api._chain import ChainParts, split_chain
from langchain_batchkit._batch_api._errors import BatchStateError
from langchain_batchkit._batch_api._jobs import JobLoop
from langchain_batchkit._batch_api._options import BatchAPIOptions
from langchain_batchkit._batch_api._provider import OpenAIBatches
from langchain_batchkit._batch_api._requests import PreparedRequest, RequestBuilder
from langchain_batchkit._batch_api._responses import message_from_body
from langchain_batchkit._batch_api._state import ItemState
from langchain_batchkit._batch_api._store import JobStore, running_batch_ids
from langchain_batchkit._errors import BatchkitError, ConfigurationError
from langchain_batchkit._results import BatchResult, ItemError, ItemResult, TokenUsage
from langchain_batchkit._runner import batchkit
from langchain_batchkit._sync import run_sync

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

        Args:
            inputs: the chain's inputs (read into a list: every request is needed up front).
            config: RunnableConfig for the local steps (callbacks, tags, metadata).
        """
        return run_sync(self.arun(inputs, config))

    async def arun(
        self, inputs: Iterable[InputT], config: RunnableConfig | None = None
    ) -> BatchResult[InputT, OutputT]:
        """Async twin of :meth:`run`."""
        pairs = list(enumerate(inputs))
        if self._running and self.state_path is not None:
            raise BatchkitError(f"{self!r} is already running on this state file")
        self._running = True
        self._cancel_requested = False
        try:
            return await self._execute(pairs, config, self.state_path, n_items=len(pairs))
        finally:
            self._running = False

    def cancel(self) -> list[str]:
        """Cancel the jobs of the running run and of the state file that are not finished.

        A run waiting on them then ends with their unfinished items as
        :class:`BatchJobUnfinishedError` errors (status ``"cancelled"``); answers that
        arrived before the cancellation are kept. Returns the cancelled job ids.
        """
        return run_sync(self.acancel())

    async def acancel(self) -> list[str]:
        """Async twin of :meth:`cancel`."""
        self._cancel_requested = True
        batch_ids = set(self._live)
        if self.state_path is not None:
            batch_ids |= running_batch_ids(self.state_path)
        cancelled = []
        async with OpenAIBatches.for_model(self.parts.model) as api:
            for batch_id in sorted(batch_ids):
                try:
                    await api.cancel(batch_id)
                except openai.ConflictError:  # it finished meanwhile: nothing to cancel
                    continue
                cancelled.append(batch_id)
        if cancelled:
            logger.info("cancelled %d job(s): %s", len(cancelled), cancelled)
        return cancelled

    # -- BatchResult.retry_failed() ------------------------------------------------------

    def _rerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]:
        return run_sync(self._arerun(pairs, config))

    async def _arerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]:
        """Re-run some items (in new jobs, state in memory), keeping their indices."""
        return await self._execute(list(pairs), config, None, n_items=len(pairs))

    # -- one run -------------------------------------------------------------------------

    async def _execute(
        self,
        pairs: list[tuple[int, InputT]],
        config: RunnableConfig | None,
        state_path: str | None,
        *,
        n_items: int,
    ) -> BatchResult[InputT, OutputT]:
        clock = self.options.clock
        start = clock()
        inputs = dict(pairs)
        failed_locally, requests = await self._prepare(pairs, config)
        items: dict[int, ItemState] = {}
        if requests:
            store = JobStore(state_path)
            try:
                run_id = store.begin(n_items=n_items)
                items, fresh = _reconcile(store.load_items(), requests, state_path)
                store.save(items=fresh)
                jobs = store.load_jobs()
                if jobs:
                    logger.info(
                        "resuming run %s from %s: %d job(s), %d still running",
                        run_id,
                        state_path,
                        len(jobs),
                        sum(not job.collected for job in jobs),
                    )
                async with OpenAIBatches.for_model(self.parts.model) as api:
                    await JobLoop(
                        run_id=run_id,
                        items=items,
                        jobs=jobs,
                        requests=requests,
                        store=store,
                        api=api,
                        options=self.options,
                        live=self._live,
                        cancelled=lambda: self._cancel_requested,
                    ).drive()
            finally:
                store.close()
        finished = await self._finish(items, inputs, config, start)
        return BatchResult(
            [*failed_locally, *finished],
            wall_time=clock() - start,
            rerunner=self,
            config=config,
        )

    async def _prepare(
        self, pairs: list[tuple[int, InputT]], config: RunnableConfig | None
    ) -> tuple[list[ItemResult[InputT, OutputT]], dict[int, PreparedRequest]]:
        """Run the local steps before the model and build each item's request."""
        failed: list[ItemResult[InputT, OutputT]] = []
        model_inputs: dict[int, Any] = {}
        if self.parts.pre is None:
            model_inputs = dict(pairs)
        else:
            kit = batchkit(
                self.parts.pre,
                max_concurrency=self.options.local_concurrency,
                retry=None,
                progress=False,
            )
            results = await kit.abatch([x for _, x in pairs], config)
            for position, (idx, x) in enumerate(pairs):
                pre = results.by_index(position)
                if pre.error is not None:
                    failed.append(ItemResult(idx, x, error=pre.error))
                else:
                    model_inputs[idx] = pre.output
        inputs = dict(pairs)
        requests: dict[int, PreparedRequest] = {}
        for idx, model_input in model_inputs.items():
            try:
                requests[idx] = self._builder.build(model_input)
            except Exception as exc:
                failed.append(ItemResult(idx, inputs[idx], error=ItemError.from_exception(exc)))
        return failed, requests

    async def _finish(
        self,
        items: Mapping[int, ItemState],
        inputs: Mapping[int, InputT],
        config: RunnableConfig | None,
        start: float,
    ) -> list[ItemResult[InputT, OutputT]]:
        """Turn answers into messages, run the local steps after the model, build results."""
        now = self.options.clock()
        results: list[ItemResult[InputT, OutputT]] = []
        messages: dict[int, AIMessage] = {}
        for idx, state in sorted(items.items()):
            error = state.error
            if state.status == "succeeded" and state.response is not None:
                try:
                    messages[idx] = message_from_body(
                        self.parts.model, self._builder, state.response
                    )
                    continue
                except Exception as exc:
                    error = ItemError.from_exception(exc)
            results.append(self._result(state, inputs[idx], None, error, None, now - start))
        outputs: dict[int, tuple[object, ItemError | None]] = {
            idx: (message, None) for idx, message in messages.items()
        }
        if self.parts.post is not None and messages:
            order = list(messages)
            kit = batchkit(
                self.parts.post,
                max_concurrency=self.options.local_concurrency,
                retry=None,
                progress=False,
            )
            post = await kit.abatch([messages[idx] for idx in order], config)
            for position, idx in enumerate(order):
                done = post.by_index(position)
                outputs[idx] = (done.output, done.error)
        for idx, (output, error) in outputs.items():
            state = items[idx]
            latency = (state.finished_at or now) - start
            usage = TokenUsage.from_output(messages[idx])
            results.append(self._result(state, inputs[idx], output, error, usage, latency))
        return results

    @staticmethod
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
