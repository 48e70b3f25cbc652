"""A MicroBatcher's values and state: its validated limits, one queued call, and what
it keeps per event loop (made lazily inside the loop that uses it)."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from langchain_core.runnables import RunnableConfig

from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._validate import check_int, check_number, is_int

__all__ = ["Call", "Limits", "LoopState"]

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
