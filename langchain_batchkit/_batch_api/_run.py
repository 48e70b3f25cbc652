"""One Batch API run's state between its phases (see :class:`ApiRun`), and its results."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableConfig

from langchain_batchkit._batch_api._drive import drive_jobs
from langchain_batchkit._batch_api._provider import OpenAIBatches
from langchain_batchkit._batch_api._requests import PreparedRequest
from langchain_batchkit._batch_api._responses import message_from_body
from langchain_batchkit._batch_api._state import ItemState
from langchain_batchkit._costs import price_message
from langchain_batchkit._item import ItemError, ItemResult, TokenUsage
from langchain_batchkit._prices import PriceBook
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

    # -- 1. before the model -------------------------------------------------------------

    def before_model(self) -> LocalStep | None:
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
                self.requests[idx] = self.runner.builder.build(model_input)
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
        self.items = await drive_jobs(
            state_path=self.state_path,
            n_items=len(self.pairs),
            requests=self.requests,
            api=lambda: OpenAIBatches.for_model(runner.parts.model, private_loop=private_loop),
            options=runner.options,
            control=runner._control,
        )

    # -- 3. after the model --------------------------------------------------------------

    def after_model(self) -> LocalStep | None:
        """Turn answers into messages; the local steps after the model, over them."""
        runner = self.runner
        now = self.answered_at = runner.options.timer()
        for idx, state in sorted(self.items.items()):
            error = state.error
            if state.status == "succeeded" and state.response is not None:
                try:
                    self.messages[idx] = message_from_body(
                        runner.parts.model, runner.builder, state.response
                    )
                    continue
                except Exception as exc:
                    error = ItemError.from_exception(exc)
            self.failed.append(
                _result(state, self.inputs[idx], None, error, None, now - self.start)
            )
        return self._local(runner.parts.post, list(self.messages.values()))

    def _cost(self, message: object) -> float | None:
        """The answer's dollars at the Batch API's price."""
        runner = self.runner
        prices = cast(PriceBook, runner.options.prices)
        return price_message(message, prices, "batch", _model_name(runner.parts.model))

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
            result: ItemResult[InputT, OutputT] = _result(
                state, self.inputs[idx], output, error, usage, latency
            )
            results.append(replace(result, cost=self._cost(message)))
        return BatchResult(
            results,
            wall_time=self.runner.options.timer() - self.start,
            rerunner=self.runner,
            config=self.config,
        )


def _model_name(model: object) -> str | None:
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    return name if isinstance(name, str) else None


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
