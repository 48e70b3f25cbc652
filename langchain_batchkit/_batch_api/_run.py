"""One Batch API run's state between its phases (see :class:`ApiRun`), and its results."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import merge_configs

from langchain_batchkit._batch_api._backends import ModelBackend
from langchain_batchkit._batch_api._drive import drive_jobs
from langchain_batchkit._batch_api._requests import PreparedRequest
from langchain_batchkit._batch_api._responses import RejectedAnswer
from langchain_batchkit._batch_api._rounds import CountsBar, OnlineModelWatch, Spent, round_id
from langchain_batchkit._batch_api._state import ItemState
from langchain_batchkit._costs import price_message
from langchain_batchkit._item import ItemError, ItemResult
from langchain_batchkit._prices import PriceBook
from langchain_batchkit._reask import as_messages, broken_tool_call, follow_up, is_parse_error
from langchain_batchkit._results import BatchResult
from langchain_batchkit._runner import BatchKit, batchkit

if TYPE_CHECKING:
    from langchain_batchkit._batch_api._runner import BatchAPIRunner

__all__ = ["ApiRun", "LocalStep"]

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass(frozen=True, slots=True)
class LocalStep:
    """Local steps of the chain to run over some inputs, results keyed by position."""

    kit: BatchKit[Any, Any]
    inputs: list[Any]


class ApiRun(Generic[InputT, OutputT]):
    """One run's state between its phases: the drivers only choose how each runs.

    1. :meth:`before_model` names the local steps before the first model;
       :meth:`begin` takes their results as the items alive.
    2. Round after round, while :meth:`next_round` builds requests: :meth:`drive`
       runs their jobs (the only phase doing I/O here: the provider's calls and the
       state file); :meth:`after_model` turns answers into messages and names the
       local steps after the model; :meth:`advance` takes their results. A round is
       one model step over the items still alive (an item that failed takes no
       part in later rounds), or, with ``reask``, that step again over the items
       whose answers failed to parse, with their answers and errors.
    3. :meth:`finish` builds the results.

    A driver runs the named local steps (sync or async) and hands their results on.
    """

    __slots__ = (
        "_attempt",
        "_first",
        "_followed",
        "_passed",
        "_pending",
        "_scratch",
        "_step",
        "_watch",
        "alive",
        "answered_at",
        "config",
        "failed",
        "inputs",
        "items",
        "messages",
        "pairs",
        "requests",
        "runner",
        "spent",
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
        self.failed: dict[int, ItemResult[InputT, OutputT]] = {}
        self.alive: dict[int, Any] = {}
        self.requests: dict[int, PreparedRequest] = {}
        self.items: dict[int, ItemState] = {}
        self.messages: dict[int, AIMessage] = {}
        self.spent: dict[int, Spent] = {idx: Spent() for idx, _ in pairs}
        self.answered_at = self.start
        self._step, self._attempt = -1, 0
        self._pending: dict[int, Any] = {}  # model inputs of the step's next attempt
        self._passed: dict[int, Any] = {}  # outputs of the step so far
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._watch = OnlineModelWatch()
        self._first: dict[int, Any] = {}  # model inputs of the step's first attempt
        self._followed: dict[int, tuple[BaseMessage, ...]] = {}  # re-ask messages so far

    def _local(self, step: Runnable[Any, Any] | None, inputs: list[Any]) -> LocalStep | None:
        if step is None or not inputs:
            return None
        kit = batchkit(
            step,
            max_concurrency=self.runner.options.local_concurrency,
            retry=None,
            progress=False,
        )
        return LocalStep(kit, inputs)

    @property
    def local_config(self) -> RunnableConfig:
        """The run's config for its local steps, with a watch for models called online."""
        return merge_configs(self.config, {"callbacks": [self._watch]})

    def _fail(self, idx: int, error: ItemError | None, state: ItemState | None = None) -> None:
        """End an item with ``error``; the latest answer it paid for (this round's, or an
        earlier round's) rides on the error as its ``output``, so nothing paid is lost."""
        spent = self.spent[idx]
        if state is not None:
            spent.add(state, None, 0.0)
        if error is not None and error.output is None and spent.answer is not None:
            error = replace(error, output=spent.answer)
        now = spent.finished_at or self.runner.options.timer()
        self.failed[idx] = ItemResult(
            index=idx,
            input=self.inputs[idx],
            error=error,
            attempts=max(1, spent.submissions),
            latency=max(0.0, now - self.start),
            usage=spent.usage,
            history=tuple(spent.history),
            cost=spent.cost if spent.usage is not None else None,
        )

    # -- 1. before the first model ---------------------------------------------------------

    def before_model(self) -> LocalStep | None:
        """The local steps before the first model, over every input; None if there are none."""
        return self._local(self.runner.plan.pre, [x for _, x in self.pairs])

    def begin(self, pre: BatchResult[Any, Any] | None) -> None:
        """The items alive for the first round: ``pre``'s outputs, or the inputs."""
        if pre is None:
            self.alive = dict(self.pairs)
            return
        for position, (idx, _) in enumerate(self.pairs):
            done = pre.by_index(position)
            if done.error is not None:
                self._fail(idx, done.error)
            else:
                self.alive[idx] = done.output

    # -- 2. the rounds -----------------------------------------------------------------------

    @property
    def round(self) -> int:
        """The current round's id (see :func:`round_id`)."""
        return round_id(self._step, self._attempt)

    def next_round(self) -> bool:
        """Move to the next round and build its requests; False when none is left.

        The next round re-asks the current model step if some of its answers failed
        to parse, else runs the next model step over the items alive.
        """
        if self._pending:
            self._attempt += 1
        else:
            if self._step >= 0:
                self.alive = self._passed
            self._step, self._attempt = self._step + 1, 0
            if self._step >= len(self.runner.plan.steps) or not self.alive:
                return False
            self._pending, self._first = dict(self.alive), dict(self.alive)
            self._passed, self._followed = {}, {}
        backend = self.runner.plan.steps[self._step].backend
        self.requests, self.items = {}, {}
        for idx, model_input in self._pending.items():
            try:
                self.requests[idx] = backend.build(model_input)
            except Exception as exc:
                self._fail(idx, ItemError.from_exception(exc))
        self._pending = {idx: x for idx, x in self._pending.items() if idx in self.requests}
        return True

    async def drive(self, *, private_loop: bool) -> None:
        """Create, poll and collect the jobs of this round's requests, through the state file.

        Args:
            private_loop: this runs on a private loop (a sync run): the client is made
                without the model's ``http_async_client`` (see :class:`OpenAIBatches`).
        """
        runner = self.runner
        backend = runner.plan.steps[self._step].backend
        step, attempt = self._step + 1, self._attempt
        what = f"re-ask {attempt}" if attempt else f"round {step}/{len(runner.plan.steps)}"
        bar = CountsBar(
            len(self.requests),
            runner.progress,
            desc=f"batch {what} ({backend.model_name})",
            unit="request",
        )
        try:
            self.items = await self._drive(backend, private_loop, bar)
        finally:
            bar.close()

    async def _drive(
        self, backend: ModelBackend, private_loop: bool, counts: CountsBar
    ) -> dict[int, ItemState]:
        runner = self.runner
        return await drive_jobs(
            state_path=self.state_path,
            n_items=len(self.pairs),
            requests=self.requests,
            api=lambda: backend.client(private_loop=private_loop),
            options=runner.options,
            control=runner._control,
            round=self.round,
            queue_path=self._queue_path(),
            on_counts=counts if counts.shown else None,
        )

    def _queue_path(self) -> str | None:
        """Without a state file, the run's queue lives in a temporary file, so what it
        learns of the provider's enqueued-token cap holds for the run's later rounds."""
        if self.state_path is not None or self.runner.options.queue_path is not None:
            return None
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="batchkit-queue-")
        return os.path.join(self._scratch.name, "queue.sqlite")

    def after_model(self) -> LocalStep | None:
        """Turn this round's answers into messages; the local steps after the model."""
        step = self.runner.plan.steps[self._step]
        self.answered_at = self.runner.options.timer()
        self.messages, self._pending = {}, {}
        for idx, state in sorted(self.items.items()):
            if state.status != "succeeded" or state.response is None:
                self._fail(idx, state.error, state)
                continue
            rejection: OutputParserException | None
            try:
                message = step.backend.message(state.response)
            except RejectedAnswer as exc:
                message, rejection = exc.answer, exc
            except Exception as exc:
                self._fail(idx, ItemError.from_exception(exc), state)
                continue
            else:
                rejection = broken_tool_call(message) if self.runner.reask else None
            self.spent[idx].add(state, message, self._cost(message))
            if rejection is not None:
                self._rejected(idx, message, rejection)
            else:
                self.messages[idx] = message
        return self._local(step.post, list(self.messages.values()))

    def advance(self, post: BatchResult[Any, Any] | None) -> None:
        """Take each message through ``post`` (if any): passed, re-asked or failed."""
        for position, (idx, message) in enumerate(self.messages.items()):
            if post is None:
                self._passed[idx] = message
                continue
            done = post.by_index(position)
            if done.error is None:
                self._passed[idx] = done.output
            elif done.error.exception is not None and is_parse_error(done.error.exception):
                self._rejected(idx, message, done.error.exception, done.error)
            else:
                self._fail(idx, done.error)

    def _rejected(
        self, idx: int, answer: AIMessage, exc: BaseException, error: ItemError | None = None
    ) -> None:
        """An answer failed to parse: re-ask in the next round, or fail keeping the answer."""
        reask = self.runner.reask
        error = error or ItemError.from_exception(exc)
        if reask is None or self._attempt + 1 >= reask.max_attempts:
            self._fail(idx, replace(error, output=answer))
            return
        self.spent[idx].rejected(error, answer, self._cost(answer))
        self._followed[idx] = self._followed.get(idx, ()) + follow_up(
            answer, exc, reask.max_error_chars
        )
        self._pending[idx] = [*as_messages(self._first[idx]), *self._followed[idx]]

    def _cost(self, message: object) -> float | None:
        """The answer's dollars at the Batch API's price."""
        backend = self.runner.plan.steps[self._step].backend
        prices = cast(PriceBook, self.runner.options.prices)
        return price_message(message, prices, "batch", backend.model_name)

    def close(self) -> None:
        """Remove the run's temporary queue file, if it made one."""
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    # -- 3. the results ----------------------------------------------------------------------

    def finish(self) -> BatchResult[InputT, OutputT]:
        """The run's results: every item alive after the last round, and every failure."""
        results: list[ItemResult[InputT, OutputT]] = list(self.failed.values())
        for idx, output in self.alive.items():
            spent = self.spent[idx]
            latency = (spent.finished_at or self.answered_at) - self.start
            results.append(
                ItemResult(
                    index=idx,
                    input=self.inputs[idx],
                    output=cast(OutputT, output),
                    attempts=max(1, spent.submissions),
                    latency=max(0.0, latency),
                    usage=spent.usage,
                    history=tuple(spent.history),
                    cost=spent.cost if spent.usage is not None else None,
                )
            )
        return BatchResult(
            results,
            wall_time=self.runner.options.timer() - self.start,
            rerunner=self.runner,
            config=self.config,
        )
