"""Specification of MicroBatcher: single calls flushed together as batch calls.

Time is a FakeClock (deadlines and the flusher's alarm), and work is held by
events, so no test sleeps in real time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from langchain_batchkit._clock import as_clock
from langchain_batchkit._errors import BatchKitError, ConfigurationError
from langchain_batchkit._microbatch import (
    BatcherStoppedError,
    BatchOutputMismatchError,
    MicroBatcher,
)
from langchain_batchkit.testing import FakeClock, FakeServerConfig
from langchain_batchkit.testing.pytest_plugin import FakeServerFactory


class Recorder:
    """A batch function that records each batch, optionally held until released."""

    def __init__(self, *, held: bool = False) -> None:
        self.batches: list[list[Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0
        self.held = held
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.started.set()
        try:
            if self.held:
                await self.release.wait()
            else:
                await asyncio.sleep(0)
            return [f"done {x}" for x in items]
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def batcher(target: Any, clock: FakeClock, **options: Any) -> MicroBatcher[Any, Any]:
    return MicroBatcher(target, clock=clock, **options)


async def settle() -> None:
    """Let every ready callback run (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- flushing


async def test_a_full_batch_is_flushed_at_once_without_waiting(clock: FakeClock) -> None:
    fn = Recorder()
    b = batcher(fn, clock, max_batch_size=3, max_queue_time=60.0)
    start = clock()

    results = await asyncio.gather(*(b.ainvoke(i) for i in range(6)))

    assert results == [f"done {i}" for i in range(6)]
    assert fn.batches == [[0, 1, 2], [3, 4, 5]]
    assert clock() == start


async def test_a_partial_batch_is_flushed_when_its_oldest_item_has_waited_max_queue_time(
    clock: FakeClock,
) -> None:
    fn = Recorder()
    b = batcher(fn, clock, max_batch_size=100, max_queue_time=0.5)
    start = clock()
    flushed_at: list[float] = []

    async def call_later(delay: float, item: int) -> str:
        await clock.sleep(delay)
        result: str = await b.ainvoke(item)
        flushed_at.append(clock())
        return result

    results = list(await asyncio.gather(call_later(0.0, 1), call_later(0.3, 2), call_later(0.7, 3)))

    assert results == ["done 1", "done 2", "done 3"]
    assert fn.batches == [[1, 2], [3]]
    assert flushed_at == [start + 0.5, start + 0.5, start + 1.2]


async def test_zero_max_queue_time_flushes_the_calls_of_one_loop_iteration_together(
    clock: FakeClock,
) -> None:
    fn = Recorder()
    b = batcher(fn, clock, max_batch_size=10, max_queue_time=0)

    await asyncio.gather(*(b.ainvoke(i) for i in range(4)))

    assert fn.batches == [[0, 1, 2, 3]]


async def test_default_clock_is_the_loops_own() -> None:
    fn = Recorder()
    b = MicroBatcher(fn, max_batch_size=2, max_queue_time=30.0)

    assert list(await asyncio.gather(b.ainvoke("a"), b.ainvoke("b"))) == ["done a", "done b"]


async def test_a_wrapped_runnable_gets_one_abatch_call_per_batch_with_each_callers_config(
    clock: FakeClock,
) -> None:
    batch_sizes: list[int] = []

    class Counting(RunnableLambda[Any, Any]):
        async def abatch(self, inputs: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
            batch_sizes.append(len(inputs))
            return await super().abatch(list(inputs), *args, **kwargs)

    def tagged(x: int, config: RunnableConfig) -> str:
        return f"{x}:{config['metadata']['caller']}"

    b = batcher(Counting(tagged), clock, max_batch_size=3, max_queue_time=1.0)

    results = await asyncio.gather(
        *(b.ainvoke(i, {"metadata": {"caller": f"c{i}"}}) for i in range(3))
    )

    assert results == ["0:c0", "1:c1", "2:c2"]
    assert batch_sizes == [3]


# --------------------------------------------------------------------------- errors


async def test_each_caller_gets_its_own_exception_and_its_neighbours_their_results(
    clock: FakeClock,
) -> None:
    def only_even(x: int) -> int:
        if x % 2:
            raise ValueError(f"odd {x}")
        return x * 10

    b = batcher(RunnableLambda(only_even), clock, max_batch_size=4, max_queue_time=1.0)

    outcomes = await asyncio.gather(*(b.ainvoke(i) for i in range(4)), return_exceptions=True)

    assert outcomes[0] == 0 and outcomes[2] == 20
    assert [str(e) for e in (outcomes[1], outcomes[3])] == ["odd 1", "odd 3"]
    assert all(isinstance(e, ValueError) for e in (outcomes[1], outcomes[3]))


async def test_a_batch_function_may_fail_one_caller_by_returning_an_exception_in_its_slot(
    clock: FakeClock,
) -> None:
    async def fn(items: list[int]) -> list[int | Exception]:
        return [KeyError(x) if x == 1 else x for x in items]

    b = batcher(fn, clock, max_batch_size=3, max_queue_time=1.0)

    outcomes = await asyncio.gather(*(b.ainvoke(i) for i in range(3)), return_exceptions=True)

    assert outcomes[0] == 0 and outcomes[2] == 2
    assert isinstance(outcomes[1], KeyError)


async def test_a_batch_function_returning_the_wrong_number_of_results_fails_every_caller(
    clock: FakeClock,
) -> None:
    async def drops_one(items: list[int]) -> list[int]:
        return items[:-1]

    b = batcher(drops_one, clock, max_batch_size=3, max_queue_time=1.0)

    outcomes = await asyncio.gather(*(b.ainvoke(i) for i in range(3)), return_exceptions=True)

    assert all(isinstance(e, BatchOutputMismatchError) for e in outcomes)
    assert "returned 2 result(s) for 3 input(s)" in str(outcomes[0])


async def test_a_batch_function_returning_no_sequence_fails_every_caller(
    clock: FakeClock,
) -> None:
    async def returns_a_string(items: list[int]) -> Any:
        return "oops"

    b = batcher(returns_a_string, clock, max_batch_size=2, max_queue_time=1.0)

    outcomes = await asyncio.gather(b.ainvoke(1), b.ainvoke(2), return_exceptions=True)

    assert all(isinstance(e, BatchOutputMismatchError) for e in outcomes)
    assert "got str" in str(outcomes[0])


async def test_an_exception_raised_by_the_batch_call_reaches_every_caller_of_that_batch(
    clock: FakeClock,
) -> None:
    async def fails_when_4_is_in(items: list[int]) -> list[int]:
        if 4 in items:
            raise RuntimeError("endpoint down")
        return items

    b = batcher(fails_when_4_is_in, clock, max_batch_size=3, max_queue_time=1.0)

    outcomes = await asyncio.gather(*(b.ainvoke(i) for i in range(6)), return_exceptions=True)

    assert outcomes[:3] == [0, 1, 2]
    assert all(isinstance(e, RuntimeError) for e in outcomes[3:])


async def test_a_cancelled_caller_leaves_the_queue_and_its_neighbours_unharmed(
    clock: FakeClock,
) -> None:
    fn = Recorder()
    b = batcher(fn, clock, max_batch_size=10, max_queue_time=1.0)
    leaving = asyncio.ensure_future(b.ainvoke("leaves"))
    staying = asyncio.ensure_future(b.ainvoke("stays"))
    await settle()

    leaving.cancel()
    result = await staying

    assert result == "done stays"
    assert fn.batches == [["stays"]]
    assert leaving.cancelled()


# --------------------------------------------------------------------------- concurrency


async def test_concurrency_caps_batch_calls_in_flight(clock: FakeClock) -> None:
    fn = Recorder(held=True)
    b = batcher(fn, clock, max_batch_size=2, max_queue_time=0.0, concurrency=2)
    calls = [asyncio.ensure_future(b.ainvoke(i)) for i in range(10)]
    await settle()

    assert fn.in_flight == 2
    fn.release.set()
    results = await asyncio.gather(*calls)

    assert results == [f"done {i}" for i in range(10)]
    assert fn.max_in_flight == 2
    assert sorted(x for batch in fn.batches for x in batch) == list(range(10))


@pytest.mark.parametrize("unlimited", [None, 0])
async def test_no_concurrency_limit_runs_every_due_batch_at_once(
    clock: FakeClock, unlimited: int | None
) -> None:
    fn = Recorder(held=True)
    b = batcher(fn, clock, max_batch_size=2, max_queue_time=0.0, concurrency=unlimited)
    calls = [asyncio.ensure_future(b.ainvoke(i)) for i in range(10)]
    await settle()

    assert fn.in_flight == 5
    fn.release.set()
    await asyncio.gather(*calls)
    assert b.concurrency is None


async def test_a_sync_batch_function_runs_in_an_executor_without_blocking_the_loop(
    clock: FakeClock,
) -> None:
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()
    loop_ran = threading.Event()
    threads: list[int] = []

    def blocking(items: list[int]) -> list[int]:
        threads.append(threading.get_ident())
        loop.call_soon_threadsafe(entered.set)
        # Only the event loop sets this: if the call blocked the loop, it would time out.
        assert loop_ran.wait(timeout=10), "the event loop was blocked"
        return [x + 1 for x in items]

    b = batcher(blocking, clock, max_batch_size=2, max_queue_time=0.0)
    calls = asyncio.gather(b.ainvoke(1), b.ainvoke(2))
    await entered.wait()
    loop_ran.set()

    assert list(await calls) == [2, 3]
    assert threads != [threading.get_ident()]


async def test_sync_invoke_from_a_thread_joins_the_loops_batches(clock: FakeClock) -> None:
    fn = Recorder()
    b = batcher(fn, clock, max_batch_size=2, max_queue_time=60.0)

    results = list(await asyncio.gather(b.ainvoke("async"), asyncio.to_thread(b.invoke, "thread")))

    assert results == ["done async", "done thread"]
    assert [sorted(batch) for batch in fn.batches] == [["async", "thread"]]


def test_sync_invoke_without_a_running_loop_is_a_batch_of_one() -> None:
    seen: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        seen.append(items)
        return [x * 3 for x in items]

    b = MicroBatcher(fn, max_batch_size=8)

    assert b.invoke(2) == 6
    assert seen == [[2]]


def two_path_lambda(paths: list[str]) -> RunnableLambda[int, int]:
    """Triples its input, recording which path ran: the sync func or the async afunc."""

    def func(x: int) -> int:
        paths.append("sync")
        return x * 3

    async def afunc(x: int) -> int:
        paths.append("async")
        return x * 3

    return RunnableLambda(func, afunc=afunc)


def test_sync_invoke_without_a_loop_runs_a_runnables_sync_path() -> None:
    paths: list[str] = []
    b = MicroBatcher(two_path_lambda(paths), max_batch_size=8)

    assert b.invoke(2) == 6
    assert paths == ["sync"]


def test_sync_invoke_without_a_loop_raises_the_inputs_own_error() -> None:
    def refuse(x: int) -> int:
        raise ValueError(f"refusing {x}")

    b = MicroBatcher(RunnableLambda(refuse))

    with pytest.raises(ValueError, match="refusing 2"):
        b.invoke(2)


def test_sync_invoke_without_a_loop_refuses_an_async_batch_function() -> None:
    fn = Recorder()
    b = MicroBatcher(fn)

    with pytest.raises(ConfigurationError, match=r"await MicroBatcher\(Recorder\)\.ainvoke"):
        b.invoke(1)
    assert fn.batches == []


def test_sync_invoke_refuses_a_sync_function_that_returns_an_awaitable() -> None:
    recorder = Recorder()

    def deferred(items: list[int]) -> Any:
        return recorder(items)

    with pytest.raises(ConfigurationError, match="ainvoke"):
        MicroBatcher(deferred).invoke(1)
    assert recorder.batches == []


async def test_sync_invoke_on_the_serving_loops_own_thread_runs_alone_without_deadlock(
    clock: FakeClock,
) -> None:
    paths: list[str] = []
    b = batcher(two_path_lambda(paths), clock, max_batch_size=2, max_queue_time=0.0)
    assert await b.ainvoke(1) == 3  # the batcher now serves this loop, in this thread

    assert b.invoke(2) == 6

    assert paths == ["async", "sync"]


def test_sync_invoke_and_the_callers_own_loop_share_one_chatopenai(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    # langchain-openai caches one pooled async client per model; had invoke() run the
    # model's async path on a private loop, the caller's asyncio.run would find its
    # connections bound to that other (closed) loop.
    server = fake_openai_server_factory(FakeServerConfig())
    llm = ChatOpenAI(
        model="gpt-4o-mini", base_url=server.base_url, api_key=SecretStr("sk-test"), max_retries=0
    )

    first = MicroBatcher(llm).invoke("one")
    second = asyncio.run(llm.ainvoke("two"))
    third = MicroBatcher(llm).invoke("three")

    assert [m.content for m in (first, second, third)] == ["echo: one", "echo: two", "echo: three"]
    stats = server.stats()
    assert dict(stats.responses_by_status) == {200: 3}
    assert stats.dropped == 0


# --------------------------------------------------------------------------- lifecycle


def test_construction_starts_nothing() -> None:
    b = MicroBatcher(Recorder())

    assert b._state is None


async def test_the_flusher_is_created_on_the_first_call_and_ends_when_the_queue_is_empty(
    clock: FakeClock,
) -> None:
    b = batcher(Recorder(), clock, max_batch_size=2, max_queue_time=1.0)
    before = set(asyncio.all_tasks())

    await asyncio.gather(b.ainvoke(1), b.ainvoke(2))
    await settle()

    assert set(asyncio.all_tasks()) == before
    assert b._state is not None and b._state.idle


async def test_graceful_stop_flushes_queued_items_at_once_and_waits_for_them(
    clock: FakeClock,
) -> None:
    fn = Recorder()
    b = batcher(fn, clock, max_batch_size=2, max_queue_time=3600.0)
    start = clock()
    calls = [asyncio.ensure_future(b.ainvoke(i)) for i in range(3)]
    await settle()

    await b.stop()

    assert all(c.done() for c in calls)
    assert [c.result() for c in calls] == ["done 0", "done 1", "done 2"]
    assert fn.batches == [[0, 1], [2]]
    assert clock() == start


async def test_forced_stop_cancels_queued_and_running_calls(clock: FakeClock) -> None:
    fn = Recorder(held=True)
    b = batcher(fn, clock, max_batch_size=2, max_queue_time=60.0, concurrency=1)
    running = [asyncio.ensure_future(b.ainvoke(i)) for i in range(2)]
    await fn.started.wait()
    queued = asyncio.ensure_future(b.ainvoke(2))
    await settle()

    await b.stop(force=True)

    outcomes = await asyncio.gather(*running, queued, return_exceptions=True)
    assert all(isinstance(e, asyncio.CancelledError) for e in outcomes)
    assert fn.cancelled == 1
    assert fn.batches == [[0, 1]]


async def test_calls_after_stop_fail_clearly(clock: FakeClock) -> None:
    b = batcher(Recorder(), clock)
    await b.stop()

    with pytest.raises(BatcherStoppedError, match="is stopped"):
        await b.ainvoke(1)
    with pytest.raises(BatcherStoppedError):
        b.invoke(1)
    assert b.stopped


async def test_stopping_twice_and_stopping_an_unused_batcher_are_fine(clock: FakeClock) -> None:
    b = batcher(Recorder(), clock)

    await b.stop()
    await b.stop(force=True)

    assert b.stopped


async def test_context_manager_stops_gracefully_on_exit(clock: FakeClock) -> None:
    fn = Recorder()
    async with batcher(fn, clock, max_batch_size=10, max_queue_time=3600.0) as b:
        pending = asyncio.ensure_future(b.ainvoke("x"))
        await settle()

    assert pending.done() and pending.result() == "done x"
    with pytest.raises(BatcherStoppedError):
        await b.ainvoke("y")


async def test_context_manager_forces_stop_when_the_block_raises(clock: FakeClock) -> None:
    fn = Recorder(held=True)
    b = batcher(fn, clock, max_batch_size=1, max_queue_time=0.0)
    calls: list[asyncio.Future[Any]] = []

    async def body() -> None:
        async with b:
            calls.append(asyncio.ensure_future(b.ainvoke("x")))
            await fn.started.wait()
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await body()

    assert calls[0].cancelled()
    assert fn.cancelled == 1


def test_a_batcher_moves_to_a_new_loop_once_idle() -> None:
    b = MicroBatcher(Recorder(), max_batch_size=2, max_queue_time=0.0)

    async def twice() -> list[str]:
        return list(await asyncio.gather(b.ainvoke(1), b.ainvoke(2)))

    assert asyncio.run(twice()) == ["done 1", "done 2"]
    assert asyncio.run(twice()) == ["done 1", "done 2"]


async def test_a_batcher_busy_on_one_loop_refuses_another(clock: FakeClock) -> None:
    fn = Recorder(held=True)
    b = batcher(fn, clock, max_batch_size=1, max_queue_time=0.0)
    call = asyncio.ensure_future(b.ainvoke(1))
    await fn.started.wait()

    def from_another_loop() -> None:
        with pytest.raises(BatchKitError, match="another event loop"):
            asyncio.run(b.ainvoke(2))

    await asyncio.to_thread(from_another_loop)
    fn.release.set()
    assert await call == "done 1"


def test_a_batcher_used_on_a_finished_loop_can_be_stopped_from_another() -> None:
    b = MicroBatcher(Recorder(), max_batch_size=1, max_queue_time=0.0)
    asyncio.run(b.ainvoke(1))

    asyncio.run(b.stop())

    assert b.stopped


async def test_a_failing_flusher_fails_the_queued_callers_instead_of_leaving_them_waiting(
    clock: FakeClock,
) -> None:
    readings = [clock()]

    def broken_clock() -> float:
        if not readings:
            raise RuntimeError("clock broke")
        return readings.pop()

    b = MicroBatcher(Recorder(), max_batch_size=5, clock=as_clock(broken_clock, clock.sleep))

    with pytest.raises(RuntimeError, match="clock broke"):
        await b.ainvoke(1)


async def test_keyword_arguments_are_refused(clock: FakeClock) -> None:
    b = batcher(Recorder(), clock)

    with pytest.raises(TypeError, match="no keyword arguments"):
        await b.ainvoke(1, stop=["x"])


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 2.5}, "max_batch_size"),
        ({"max_batch_size": True}, "max_batch_size"),
        ({"max_queue_time": -0.1}, "max_queue_time"),
        ({"max_queue_time": float("inf")}, "max_queue_time"),
        ({"max_queue_time": "1"}, "max_queue_time"),
        ({"concurrency": -1}, "concurrency"),
        ({"concurrency": 1.5}, "concurrency"),
    ],
)
def test_bad_limits_fail_at_construction_naming_the_field(
    options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigurationError, match=field):
        MicroBatcher(Recorder(), **options)


async def test_the_queue_waits_on_the_clock_it_is_given(clock: FakeClock) -> None:
    recorder = Recorder()
    b = MicroBatcher(recorder, max_queue_time=5, clock=clock)

    assert await b.ainvoke(1) == "done 1"
    assert clock.sleeps == [5]


async def test_sleep_still_works_for_one_release_with_a_deprecation_warning(
    clock: FakeClock,
) -> None:
    with pytest.warns(DeprecationWarning, match="clock=") as caught:
        b = MicroBatcher(Recorder(), max_queue_time=5, clock=clock, sleep=clock.sleep)

    assert caught[0].filename == __file__
    assert await b.ainvoke(1) == "done 1"
    assert clock.sleeps == [5]


def test_a_bare_time_function_needs_its_sleep(clock: FakeClock) -> None:
    with pytest.raises(ConfigurationError, match="together"):
        MicroBatcher(Recorder(), clock=time.monotonic)
    with pytest.raises(ConfigurationError, match="together"):
        MicroBatcher(Recorder(), sleep=clock.sleep)


def test_clock_must_be_a_clock() -> None:
    with pytest.raises(ConfigurationError, match="clock must be a Clock"):
        MicroBatcher(Recorder(), clock=42)  # type: ignore[arg-type]


def test_target_must_be_a_runnable_or_a_callable() -> None:
    with pytest.raises(ConfigurationError, match="target"):
        MicroBatcher(42)  # type: ignore[arg-type]


def test_repr_shows_the_limits() -> None:
    b = MicroBatcher(Recorder(), max_batch_size=8, max_queue_time=0.02, concurrency=3)

    assert repr(b) == (
        "MicroBatcher(Recorder, max_batch_size=8, max_queue_time=0.02, concurrency=3)"
    )
