"""What a MicroBatcher flushes to: a Runnable or a user batch function, async or sync.

The batcher only ever asks for "these inputs, one result each, in order"; this module
answers it for each kind of target, on the loop (``acall``) or in the calling thread
(``call``), and turns a wrong-shaped answer into the error every caller of that batch
gets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar, cast

from langchain_core.runnables import Runnable, RunnableConfig

from langchain_batchkit._errors import BatchOutputMismatchError, ConfigurationError

__all__ = ["BatchFunction", "BatchTarget", "name_of"]

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

#: A user batch function: one list of inputs in, one result per input out, in order.
BatchFunction = (
    Callable[[list[InputT]], Awaitable[Sequence[OutputT]]]
    | Callable[[list[InputT]], Sequence[OutputT]]
)


class BatchTarget(Generic[InputT, OutputT]):
    """A batcher's target and how to call it with one batch.

    Example:
        >>> async def double(xs: list[int]) -> list[int]:
        ...     return [2 * x for x in xs]
        >>> asyncio.run(BatchTarget(double, "MicroBatcher(double)").acall([1, 2], [{}, {}]))
        [2, 4]
    """

    __slots__ = ("_executor", "_is_async_fn", "_label", "target")

    def __init__(
        self,
        target: Runnable[InputT, OutputT] | BatchFunction[InputT, OutputT],
        label: str,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        if not isinstance(target, Runnable) and not callable(target):
            raise ConfigurationError(
                f"target must be a Runnable or a batch function, got {type(target).__name__}"
            )
        self.target = target
        self._label = label
        self._executor = executor
        self._is_async_fn = not isinstance(target, Runnable) and _is_async_callable(target)

    @property
    def input_type(self) -> Any:
        return self.target.InputType if isinstance(self.target, Runnable) else Any

    @property
    def output_type(self) -> Any:
        return self.target.OutputType if isinstance(self.target, Runnable) else Any

    async def acall(
        self, inputs: list[InputT], configs: list[RunnableConfig]
    ) -> Sequence[OutputT | Exception]:
        """One batch on the running loop (a sync batch function runs in the executor)."""
        target = self.target
        outputs: object
        if isinstance(target, Runnable):
            outputs = await target.abatch(inputs, configs, return_exceptions=True)
        elif self._is_async_fn:
            fn = cast(Callable[[list[InputT]], Awaitable[Sequence[OutputT]]], target)
            outputs = await fn(inputs)
        else:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, target, inputs)
            if inspect.isawaitable(outputs):
                outputs = await outputs
        return self._checked(outputs, len(inputs))

    def call(
        self, inputs: list[InputT], configs: list[RunnableConfig]
    ) -> Sequence[OutputT | Exception]:
        """The target's sync path, in this thread: what ``invoke`` runs alone."""
        target = self.target
        if self._is_async_fn:
            raise self._no_loop_error()
        outputs: object
        if isinstance(target, Runnable):
            outputs = target.batch(inputs, configs, return_exceptions=True)
        else:
            outputs = target(inputs)
            if inspect.isawaitable(outputs):
                if inspect.iscoroutine(outputs):
                    outputs.close()  # never awaited: closed, so no "never awaited" warning
                raise self._no_loop_error()
        return self._checked(outputs, len(inputs))

    def _no_loop_error(self) -> ConfigurationError:
        return ConfigurationError(
            f"{self._label}.invoke() cannot run the async batch function "
            f"{name_of(self.target)}: no event loop serves the batcher from another "
            f"thread, and it never makes a private one. `await {self._label}.ainvoke(...)` "
            "instead, or call invoke() from a thread beside the loop that serves the batcher"
        )

    def _checked(self, outputs: object, n_inputs: int) -> Sequence[OutputT | Exception]:
        """``outputs`` as one result per input, or the error every caller of the batch gets."""
        name = name_of(self.target)
        if isinstance(outputs, str | bytes) or not isinstance(outputs, Sequence):
            raise BatchOutputMismatchError(
                f"{name} must return a sequence with one result per input, "
                f"got {type(outputs).__name__}"
            )
        if len(outputs) != n_inputs:
            raise BatchOutputMismatchError(
                f"{name} returned {len(outputs)} result(s) for {n_inputs} "
                "input(s); results are matched to callers by position, so none can be used"
            )
        return cast(Sequence[OutputT | Exception], outputs)


def name_of(target: object) -> str:
    """A target's name for labels and messages."""
    if isinstance(target, Runnable):
        return target.get_name()
    return str(getattr(target, "__qualname__", None) or type(target).__name__)


def _is_async_callable(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
