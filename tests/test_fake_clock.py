"""FakeClock: virtual time that moves once the event loop has gone quiet.

It must decide that from public asyncio only, so it works on any loop, and keep the
order of deadlines exact for the tasks the suite runs.
"""

from __future__ import annotations

import ast
import asyncio
import threading
from pathlib import Path

import pytest

import langchain_batchkit
from langchain_batchkit.testing import FakeClock

PACKAGE = Path(langchain_batchkit.__file__).parent
LOOP_PRIVATES = {"_ready", "_thread_id", "_scheduled", "_selector"}


def _private_loop_reads(source: str) -> list[str]:
    """``x._ready`` on anything but ``self``, and ``getattr(x, "_ready")``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        on_self = isinstance(node, ast.Attribute) and (
            isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}
        )
        if isinstance(node, ast.Attribute) and node.attr in LOOP_PRIVATES and not on_self:
            found.append(f"{node.lineno}: .{node.attr}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in LOOP_PRIVATES
        ):
            found.append(f"{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_no_module_reads_private_event_loop_attributes() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): reads
        for path in sorted(PACKAGE.rglob("*.py"))
        if (reads := _private_loop_reads(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


async def test_sleepers_wake_in_deadline_order_at_their_deadlines() -> None:
    clock = FakeClock(start=0.0)
    woke: list[tuple[str, float]] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock()))

    await asyncio.gather(nap("c", 30), nap("a", 10), nap("b", 20))
    assert woke == [("a", 10.0), ("b", 20.0), ("c", 30.0)]


async def test_a_task_that_yields_a_few_times_first_is_not_overtaken() -> None:
    clock = FakeClock(start=0.0)
    woke: list[str] = []

    async def long_nap() -> None:
        await clock.sleep(10)
        woke.append("long")

    async def short_nap_after_yields() -> None:
        for _ in range(clock.quiet_hops - 1):
            await asyncio.sleep(0)
        await clock.sleep(1)
        woke.append("short")

    await asyncio.gather(long_nap(), short_nap_after_yields())
    assert woke == ["short", "long"]


async def test_a_task_waiting_on_another_task_is_not_overtaken() -> None:
    clock = FakeClock(start=0.0)
    woke: list[str] = []

    async def hop() -> None:
        await asyncio.sleep(0)

    async def short_nap_after_a_subtask() -> None:
        await asyncio.create_task(hop())
        await clock.sleep(1)
        woke.append("short")

    async def long_nap() -> None:
        await clock.sleep(10)
        woke.append("long")

    await asyncio.gather(long_nap(), short_nap_after_a_subtask())
    assert woke == ["short", "long"]


async def test_a_task_that_polls_forever_does_not_stop_time() -> None:
    clock = FakeClock(start=0.0)
    done = False

    async def poll() -> int:
        spins = 0
        while not done:
            spins += 1
            await asyncio.sleep(0)
        return spins

    poller = asyncio.create_task(poll())
    await clock.sleep(5)
    done = True
    assert await poller > 0
    assert clock() == 5.0


async def test_a_result_from_another_thread_that_has_arrived_is_taken_first() -> None:
    clock = FakeClock(start=0.0)
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[str] = loop.create_future()
    order: list[str] = []

    async def wait_for_thread() -> None:
        order.append(await answered)
        await clock.sleep(1)
        order.append("after thread")

    async def long_nap() -> None:
        await clock.sleep(10)
        order.append("long")

    thread = threading.Thread(
        target=loop.call_soon_threadsafe, args=(answered.set_result, "thread")
    )
    thread.start()
    thread.join()  # the answer is queued on the loop before anyone sleeps
    await asyncio.gather(long_nap(), wait_for_thread())
    assert order == ["thread", "after thread", "long"]


async def test_cancelled_sleepers_do_not_move_time() -> None:
    clock = FakeClock(start=0.0)
    never = asyncio.create_task(clock.sleep(100))
    await asyncio.sleep(0)
    never.cancel()
    await clock.sleep(1)
    assert clock() == 1.0


async def test_advance_by_hand_wakes_due_sleepers() -> None:
    clock = FakeClock(start=0.0, quiet_hops=10_000)
    napper = asyncio.create_task(clock.sleep(3))
    await asyncio.sleep(0)
    clock.advance(3)
    await napper
    assert clock() == 3.0


def test_one_clock_serves_one_loop_after_another() -> None:
    clock = FakeClock(start=0.0)
    asyncio.run(clock.sleep(1))
    asyncio.run(clock.sleep(2))
    assert clock() == 3.0
    assert clock.sleeps == [1, 2]


def test_quiet_hops_must_be_positive() -> None:
    with pytest.raises(ValueError, match="quiet_hops"):
        FakeClock(quiet_hops=0)


async def test_time_stands_still_while_the_clock_is_busy() -> None:
    clock = FakeClock(quiet_hops=2)
    woke = asyncio.Event()

    async def sleeper() -> None:
        await clock.sleep(5)
        woke.set()

    task = asyncio.create_task(sleeper())
    with clock.busy():
        for _ in range(50):  # far more quiet iterations than quiet_hops
            await asyncio.sleep(0)
        assert clock() == 1000.0 and not woke.is_set()
    await task
    assert clock() == 1005.0
