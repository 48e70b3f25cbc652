"""A MicroBatcher's values and state: its validated limits and clock, one queued call,
and what it keeps per event loop (made lazily inside the loop that uses it)."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from langchain_core.runnables import RunnableConfig

from langchain_batchkit._clock import Clock, as_clock
from langchain_batchkit._deprecation import warn_deprecated
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._validate import check_int, check_number, is_int

__all__ = ["Call", "Limits", "LoopState", "queue_clock"]

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass(frozen=True, slots=True)
class Limits:
    """The validated size, time and concurrency limits of a MicroBatcher."""

    max_batch_size: int
    max_queue_time: float
    concurrency: int | None

    def __post_init__(self) -> None:
        check_int("max_batch_size", self.max_batch_size)
        check_number("max_queue_time", self.max_queue_time)
        cap = self.concurrency
        if cap is not None and not (is_int(cap) and cap >= 0):
            raise ConfigurationError(
                f"concurrency must be None, 0 (both: unlimited) or an int >= 1, got {cap!r}"
            )


@dataclass(slots=True, eq=False)
class Call(Generic[InputT, OutputT]):
    """One queued caller: its input and config, the future it awaits, its deadline."""

    input: InputT
    config: RunnableConfig
    future: asyncio.Future[OutputT]
    deadline: float


class LoopState(Generic[InputT, OutputT]):
    """Everything bound to the one event loop the batcher currently serves.

    Made inside that loop, so ``thread`` is the id of the thread running it.
    """

    __slots__ = ("flusher", "loop", "queue", "running", "slots", "thread", "wakeup")

    def __init__(self, loop: asyncio.AbstractEventLoop, concurrency: int | None) -> None:
        self.loop = loop
        self.thread = threading.get_ident()
        self.queue: deque[Call[InputT, OutputT]] = deque()
        self.wakeup = asyncio.Event()
        self.slots = asyncio.Semaphore(concurrency) if concurrency else None
        self.flusher: asyncio.Task[None] | None = None
        self.running: dict[asyncio.Task[None], list[Call[InputT, OutputT]]] = {}

    @property
    def idle(self) -> bool:
        return not self.queue and not self.running and self.flusher is None

    def serves_another_thread(self) -> bool:
        """True while the loop runs in a thread other than the caller's (calls can join it)."""
        return self.loop.is_running() and self.thread != threading.get_ident()


def queue_clock(
    clock: Clock | Callable[[], float] | None,
    sleep: Callable[[float], Awaitable[None]] | None,
) -> Clock | None:
    """The one clock the queue is timed on; ``None`` for the event loop's own."""
    if sleep is not None:
        if not callable(sleep):
            raise ConfigurationError("sleep must be an async callable taking seconds")
        if clock is None or not callable(clock):
            raise ConfigurationError(
                "clock and sleep must be given together (both measure the same time); "
                "better, pass one Clock as clock="
            )
        warn_deprecated(
            "MicroBatcher(sleep=...) is deprecated: pass one Clock as clock= (an object "
            "with __call__, sleep and sleep_sync, e.g. a FakeClock); sleep= goes in the "
            "next release",
            stacklevel=3,  # the line that built the MicroBatcher
        )
        return as_clock(clock, sleep)
    if clock is None or isinstance(clock, Clock):
        return clock
    if callable(clock):
        raise ConfigurationError(
            "clock must be a Clock (time, sleep and sleep_sync together, e.g. a FakeClock): "
            "a bare time function and the sleep measured on it go together"
        )
    raise ConfigurationError(f"clock must be a Clock, got {type(clock).__name__}")
