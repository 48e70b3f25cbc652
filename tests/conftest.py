"""Shared fixtures: controllable runnables that count what they see."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

pytest_plugins = ["pytester", "langchain_batchkit.testing.pytest_plugin"]


@dataclass
class Probe:
    """Counts calls and items in flight; items can be held until released."""

    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0
    started: list[Any] = field(default_factory=list)
    gates: dict[Any, asyncio.Event] | None = None
    reached: asyncio.Event | None = None
    reach_count: int = 0

    def gate(self, key: Any) -> asyncio.Event:
        assert self.gates is not None
        return self.gates.setdefault(key, asyncio.Event())

    def wait_for_in_flight(self, n: int) -> asyncio.Event:
        """An event set once ``n`` items have started."""
        self.reach_count = n
        self.reached = asyncio.Event()
        if len(self.started) >= n:
            self.reached.set()
        return self.reached

    def runnable(
        self, fn: Callable[[Any], Any] = lambda x: x, *, held: bool = False
    ) -> RunnableLambda[Any, Any]:
        if held:
            self.gates = {}

        async def run(x: Any) -> Any:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.started.append(x)
            if self.reached is not None and len(self.started) >= self.reach_count:
                self.reached.set()
            try:
                if held:
                    await self.gate(x).wait()
                else:
                    await asyncio.sleep(0)
                return fn(x)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.in_flight -= 1

        return RunnableLambda(run)


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def batch_clock() -> Any:
    """The fake clock a Batch API test's server and runner share."""
    from langchain_batchkit.testing import FakeClock

    return FakeClock()


@pytest.fixture
def batch_server_on(fake_openai_server_factory: Any, batch_clock: Any) -> Any:
    """Start a fake server whose Batch API timeline runs on ``batch_clock``."""
    from langchain_batchkit.testing import FakeServerConfig

    def start(**options: Any) -> Any:
        return fake_openai_server_factory(FakeServerConfig(clock=batch_clock, **options))

    return start
