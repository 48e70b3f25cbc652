"""RateLimit on LangChain's sync path: worker threads, sync steps in async chains; the Gate."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from typing import Any
from uuid import uuid4

import httpx2
import openai
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import RunnableConfig, RunnableLambda, RunnableParallel
from langchain_openai import ChatOpenAI
from pydantic import Field

from langchain_batchkit import RateLimit
from langchain_batchkit._clock import as_clock
from langchain_batchkit._gate import Gate
from langchain_batchkit.testing import FakeChatModel, FakeClock, FakeServerConfig
from langchain_batchkit.testing._models import FakeModelError
from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

ITEMS: list[Any] = [f"q{i}" for i in range(12)]


def rate_limited() -> openai.RateLimitError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(429, request=request)  # no Retry-After
    return openai.RateLimitError("rate limited", response=response, body=None)


def capped_config(limit: RateLimit) -> RunnableConfig:
    return {"callbacks": [limit.callback], "max_concurrency": 8}


def real_chat(fake_openai_server_factory: FakeServerFactory) -> tuple[ChatOpenAI, Any]:
    server = fake_openai_server_factory(FakeServerConfig(latency=0.05))
    llm = ChatOpenAI(
        base_url=server.base_url,
        api_key="sk-test",  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
    )
    return llm, server


# -- the in-flight cap over real HTTP, on every sync path langchain-core has ----------------


def test_sync_batch_in_worker_threads_keeps_the_cap_over_http(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    llm, server = real_chat(fake_openai_server_factory)
    limit = RateLimit(max_in_flight=2)

    answers = llm.batch(ITEMS, config=capped_config(limit))

    assert [a.content for a in answers] == [f"echo: {q}" for q in ITEMS]
    assert server.stats().max_in_flight <= 2
    assert limit.stats().requests == len(ITEMS)
    assert limit.stats().in_flight == 0


async def test_a_sync_step_inside_an_async_chain_keeps_the_cap_over_http(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    llm, server = real_chat(fake_openai_server_factory)
    limit = RateLimit(max_in_flight=2)

    def ask(question: str) -> str:  # no afunc: ainvoke runs it in an executor thread
        return str(llm.invoke(question).content)

    answers = await RunnableLambda(ask).abatch(ITEMS, config=capped_config(limit))

    assert answers == [f"echo: {q}" for q in ITEMS]
    assert server.stats().max_in_flight <= 2
    assert limit.stats().requests == len(ITEMS)
    assert limit.stats().in_flight == 0


def test_runnable_parallel_threads_keep_the_cap_over_http(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    llm, server = real_chat(fake_openai_server_factory)
    limit = RateLimit(max_in_flight=2)
    both = RunnableParallel(first=llm, second=llm)

    answers = both.batch(ITEMS, config=capped_config(limit))

    assert [(a["first"].content, a["second"].content) for a in answers] == [
        (f"echo: {q}", f"echo: {q}") for q in ITEMS
    ]
    assert server.stats().max_in_flight <= 2
    assert limit.stats().requests == 2 * len(ITEMS)
    assert limit.stats().in_flight == 0


async def test_a_sync_call_on_the_loops_own_thread_holds_its_slot_until_it_ends() -> None:
    # langchain-core runs the handler's coroutine on a throw-away loop here (llm.invoke
    # in a Jupyter cell); that loop's task ends at once, yet the slot must stay taken.
    limit = RateLimit(max_in_flight=1)
    held: list[int] = []

    class Probe(FakeChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
            held.append(limit.stats().in_flight)
            return super()._generate(*args, **kwargs)

    answer = Probe().invoke("hi", config={"callbacks": [limit.callback]})

    assert answer.content == "echo: hi"
    assert held == [1]
    assert limit.stats().in_flight == 0


def test_a_sync_model_error_gives_its_slot_back() -> None:
    limit = RateLimit(max_in_flight=1)
    model = FakeChatModel(fail_if_contains=("bad",))
    config: RunnableConfig = {"callbacks": [limit.callback]}

    with pytest.raises(FakeModelError):
        model.invoke("bad", config=config)

    assert limit.stats().in_flight == 0
    assert model.invoke("good", config=config).content == "echo: good"


# -- pacing on the sync path ------------------------------------------------------------


class SyncClockedModel(FakeChatModel):
    """Records the (fake) time at which each sync request reaches the 'provider'."""

    clock: Any = None
    seen: list[float] = Field(default_factory=list)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append(self.clock())
        return super()._generate(messages, stop, run_manager, **kwargs)


async def _no_async_sleep(seconds: float) -> None:
    raise AssertionError("a worker thread must block in sync_sleep, not run an async sleep")


def test_sync_requests_are_spaced_by_the_rate_with_the_injected_sync_sleep() -> None:
    clock = FakeClock()
    limit = RateLimit(
        requests_per_minute=30,
        headroom=1.0,
        clock=as_clock(clock, _no_async_sleep, clock.sleep_sync),
    )
    model = SyncClockedModel(clock=clock)

    model.batch(["a", "b", "c", "d", "e"], config={"callbacks": [limit.callback]})

    assert [b - a for a, b in zip(model.seen, model.seen[1:], strict=False)] == [2.0] * 4
    assert clock.sleeps == [pytest.approx(2.0)] * 4
    assert limit.stats().waited == 4


def test_a_thread_waiting_for_its_turn_when_a_429_comes_waits_its_turn_again() -> None:
    clock = FakeClock()
    first, second = uuid4(), uuid4()
    refused: list[float] = []

    def sleep_through_a_429(seconds: float) -> None:
        if not refused:  # while this thread sleeps, the first request is refused
            refused.append(clock())
            limit.exit(first, error=rate_limited())
        clock.sleep_sync(seconds)

    limit = RateLimit(
        requests_per_minute=60,
        headroom=1.0,
        clock=as_clock(clock, _no_async_sleep, sleep_through_a_429),
    )
    limit.enter_sync(first, 0)
    start = clock()

    limit.enter_sync(second, 0)  # its turn was at +1 s, before the 429

    assert clock() - start > 1.0  # re-paced: it did not fire at its old turn
    assert len(clock.sleeps) == 2
    assert limit.stats().repaced == 1


# -- a failing limiter fails the call, it never sends it unpaced --------------------------


def test_a_limiter_error_on_the_sync_path_fails_the_model_call() -> None:
    def broken(messages: Any, params: Any) -> int:
        raise LookupError("estimator broke")

    limit = RateLimit(tokens_per_minute=10_000, token_estimator=broken)
    model = FakeChatModel()

    with pytest.raises(LookupError, match="estimator broke"):
        model.invoke("hi", config={"callbacks": [limit.callback]})

    assert model.calls == 0


def test_a_sync_wait_that_fails_fails_the_call_and_gives_its_slot_back() -> None:
    def interrupted(seconds: float) -> None:
        raise InterruptedError("the wait was interrupted")

    clock = FakeClock()
    limit = RateLimit(
        requests_per_minute=60, max_in_flight=1, clock=as_clock(clock, sync_sleep=interrupted)
    )
    model = FakeChatModel()
    config: RunnableConfig = {"callbacks": [limit.callback]}
    model.invoke("first", config=config)  # the first request needs no wait

    with pytest.raises(InterruptedError):
        model.invoke("second", config=config)  # the second must wait a second

    assert model.calls == 1
    assert limit.stats().in_flight == 0


# -- the Gate ---------------------------------------------------------------------------


class WatchedLine(deque[Any]):
    """The gate's queue, telling the test each time a waiter joins it."""

    def __init__(self) -> None:
        super().__init__()
        self.joined: queue.Queue[None] = queue.Queue()

    def append(self, waiter: Any) -> None:
        super().append(waiter)
        self.joined.put(None)


def watched(gate: Gate) -> WatchedLine:
    line = WatchedLine()
    gate._waiters = line  # type: ignore[assignment]
    return line


async def joined(line: WatchedLine) -> None:
    await asyncio.to_thread(line.joined.get, True, 5.0)


async def test_gate_hands_slots_out_first_come_first_served_across_threads_and_a_loop() -> None:
    gate = Gate(1)
    line = watched(gate)
    order: list[str] = []

    def in_thread(name: str) -> threading.Thread:
        def run() -> None:
            assert gate.acquire_sync()
            order.append(name)
            gate.release()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    async def on_loop(name: str) -> None:
        await gate.acquire()
        order.append(name)
        gate.release()

    await gate.acquire()
    first = in_thread("thread-1")
    await joined(line)
    on_this_loop = asyncio.create_task(on_loop("loop"))
    await joined(line)
    second = in_thread("thread-2")
    await joined(line)

    gate.release()
    await on_this_loop
    await asyncio.to_thread(first.join)
    await asyncio.to_thread(second.join)

    assert order == ["thread-1", "loop", "thread-2"]
    assert gate.in_flight == 0
    assert gate.max_seen == 1


async def test_gate_a_cancelled_async_waiter_takes_no_slot() -> None:
    gate = Gate(1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)  # queued
    assert gate.waiting == 1

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert gate.waiting == 0
    gate.release()
    assert gate.in_flight == 0
    assert gate.acquire_sync(timeout=0)


async def test_gate_a_slot_granted_as_its_waiter_is_cancelled_is_handed_on() -> None:
    gate = Gate(1)
    await gate.acquire()
    doomed = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    doomed.cancel()
    gate.release()  # counted in for the doomed waiter in the same tick
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert gate.in_flight == 0


def test_gate_a_thread_that_stops_waiting_leaves_the_line() -> None:
    gate = Gate(1)
    assert gate.acquire_sync()

    assert not gate.acquire_sync(timeout=0)

    assert gate.waiting == 0
    assert gate.in_flight == 1
    gate.release()
    assert gate.acquire_sync(timeout=0)


def test_gate_a_blocked_thread_gets_the_slot_released_from_another() -> None:
    gate = Gate(1)
    line = watched(gate)
    got: list[bool] = []
    gate.acquire_sync()
    thread = threading.Thread(target=lambda: got.append(gate.acquire_sync()))
    thread.start()
    line.joined.get(timeout=5)

    gate.release()
    thread.join()

    assert got == [True]
    assert gate.in_flight == 1


def test_gate_lowering_the_cap_lets_current_holders_finish_first() -> None:
    gate = Gate(2)
    gate.acquire_sync()
    gate.acquire_sync()

    gate.cap = 1
    gate.release()

    assert gate.in_flight == 1
    assert not gate.acquire_sync(timeout=0)
    gate.release()
    assert gate.acquire_sync(timeout=0)


async def test_gate_raising_the_cap_lets_waiters_in_at_once() -> None:
    gate = Gate(1)
    await gate.acquire()
    waiters = [asyncio.create_task(gate.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    assert gate.waiting == 2

    gate.cap = 3
    await asyncio.gather(*waiters)

    assert gate.in_flight == 3


async def test_gate_wakes_a_waiter_on_another_threads_loop() -> None:
    gate = Gate(1)
    line = watched(gate)
    await gate.acquire()
    done = threading.Event()

    def other_loop() -> None:
        asyncio.run(gate.acquire())
        done.set()

    thread = threading.Thread(target=other_loop)
    thread.start()
    await joined(line)

    gate.release()
    await asyncio.to_thread(thread.join)

    assert done.is_set()
    assert gate.in_flight == 1


@pytest.mark.parametrize("cap", [0, 0.5, float("nan"), True, "2"])
def test_gate_refuses_a_cap_below_one(cap: Any) -> None:
    with pytest.raises(ValueError, match="cap"):
        Gate(cap)


def test_gate_refuses_a_release_without_a_slot() -> None:
    with pytest.raises(RuntimeError, match="no slot"):
        Gate(1).release()
