"""The entry points of a kit that hand results out as items finish, or keep only counts.

``batch_as_completed`` / ``stream_results`` / ``run`` and their async twins: each
makes one :class:`Run` (see :meth:`RunMaker._make_run`) and drives it, sync through worker
threads, async as tasks on the caller's loop. :class:`BatchKit` inherits them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import aclosing, closing
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig

from langchain_batchkit._calls import Inputs, RunMaker
from langchain_batchkit._results import ItemResult, RunReport
from langchain_batchkit._runs import Tally

__all__ = ["StreamingCalls"]

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


class StreamingCalls(RunMaker[InputT, OutputT]):
    """The streaming and counting entry points, each over one :meth:`_make_run`."""

    __slots__ = ()

    def batch_as_completed(
        self,
        inputs: Iterable[InputT],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> Iterator[tuple[int, ItemResult[InputT, OutputT]]]:
        """Yield ``(index, ItemResult)`` as items finish; leaving early starts nothing new."""
        with closing(self._make_run(inputs, config, kwargs, sync=True).iterate()) as stream:
            for result in stream:
                yield result.index, result

    async def abatch_as_completed(
        self,
        inputs: Inputs[InputT],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> AsyncIterator[tuple[int, ItemResult[InputT, OutputT]]]:
        """Async twin of :meth:`batch_as_completed`; leaving early cancels what runs."""
        run = self._make_run(inputs, config, kwargs, sync=False)
        async with aclosing(run.aiterate()) as stream:
            async for result in stream:
                yield result.index, result

    def stream_results(
        self,
        inputs: Iterable[InputT],
        config: RunnableConfig | None = None,
        *,
        ordered: bool = False,
        reorder_buffer: int = 1000,
        **kwargs: Any,
    ) -> Iterator[ItemResult[InputT, OutputT]]:
        """Yield ItemResults as they complete, reading ``inputs`` lazily.

        Memory stays bounded whatever the input's length: at most the items in
        flight, a read-ahead of one checkpoint chunk, and with ``ordered=True`` at
        most ``reorder_buffer`` finished items held back to restore input order
        (new items wait while it is full).
        """
        run = self._make_run(
            inputs, config, kwargs, sync=True, ordered=ordered, reorder_buffer=reorder_buffer
        )
        with closing(run.iterate()) as stream:
            yield from stream

    async def astream_results(
        self,
        inputs: Inputs[InputT],
        config: RunnableConfig | None = None,
        *,
        ordered: bool = False,
        reorder_buffer: int = 1000,
        **kwargs: Any,
    ) -> AsyncIterator[ItemResult[InputT, OutputT]]:
        """Async twin of :meth:`stream_results`; also accepts async iterables."""
        run = self._make_run(
            inputs, config, kwargs, sync=False, ordered=ordered, reorder_buffer=reorder_buffer
        )
        async with aclosing(run.aiterate()) as stream:
            async for result in stream:
                yield result

    def run(
        self, inputs: Iterable[InputT], config: RunnableConfig | None = None, **kwargs: Any
    ) -> RunReport:
        """Run every input and keep only counts (and failures): for inputs too big for a list.

        Results go to the checkpoint (if any) as they finish; read them back with
        ``kit.checkpoint.iter_results()`` / ``to_jsonl()``. Memory does not grow with
        the number of inputs (beyond failed items, of which the first 1,000 are kept).
        """
        run = self._make_run(inputs, config, kwargs, sync=True)
        tally = Tally()
        with closing(run.iterate()) as stream:
            for result in stream:
                tally.add(result)
        return tally.report(run)

    async def arun(
        self, inputs: Inputs[InputT], config: RunnableConfig | None = None, **kwargs: Any
    ) -> RunReport:
        """Async twin of :meth:`run`."""
        run = self._make_run(inputs, config, kwargs, sync=False)
        tally = Tally()
        async with aclosing(run.aiterate()) as stream:
            async for result in stream:
                tally.add(result)
        return tally.report(run)
