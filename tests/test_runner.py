"""The wrapper Runnable: safe batches, ordering, concurrency caps, cancellation, configs."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel

from langchain_batchkit import (
    INDEX_METADATA_KEY,
    BatchResult,
    ConfigurationError,
    InputSourceError,
    ItemResult,
    batchkit,
)
from langchain_batchkit.testing import FakeChatModel
from tests.conftest import Probe


def _upper(x: str) -> str:
    return x.upper()


# -- safe per-item capture -----------------------------------------------------------------


def test_batch_never_raises_for_a_failed_item() -> None:
    def maybe_fail(x: int) -> int:
        if x % 3 == 0:
            raise ValueError(f"bad {x}")
        return x * 10

    results = batchkit(RunnableLambda(maybe_fail), progress=False).batch(list(range(9)))

    assert isinstance(results, BatchResult)
    assert results.outputs == [None, 10, 20, None, 40, 50, None, 70, 80]
    assert [r.index for r in results.failed] == [0, 3, 6]
    assert results[3].error is not None
    assert results[3].error.type == "ValueError"
    assert results[3].error.message == "bad 3"
    assert "maybe_fail" in results[3].error.traceback


async def test_abatch_never_raises_for_a_failed_item() -> None:
    async def maybe_fail(x: int) -> int:
        if x == 2:
            raise KeyError("missing")
        return x

    results = await batchkit(RunnableLambda(maybe_fail), progress=False).abatch([0, 1, 2, 3])

    assert results.outputs == [0, 1, None, 3]
    assert [r.index for r in results.succeeded] == [0, 1, 3]
    assert results[2].error is not None and results[2].error.type == "KeyError"


def test_bad_inputs_become_their_own_item_errors() -> None:
    results = batchkit(RunnableLambda(_upper), progress=False).batch(["a", None, 3, "d"])  # type: ignore[list-item]

    assert results.outputs == ["A", None, None, "D"]
    assert {r.index: r.error.type for r in results.failed if r.error} == {
        1: "AttributeError",
        2: "AttributeError",
    }


def test_input_the_chain_rejects_is_that_items_error() -> None:
    chain = ChatPromptTemplate.from_template("say {word}") | FakeChatModel() | StrOutputParser()
    results = batchkit(chain, progress=False).batch([{"word": "hi"}, {"wrong": "key"}])

    assert results[0].output == "echo: say hi"
    assert results[1].error is not None
    assert "word" in results[1].error.message


def test_empty_input_returns_an_empty_result() -> None:
    results = batchkit(RunnableLambda(_upper)).batch([])
    assert results == []
    assert isinstance(results, BatchResult)
    assert results.summary().total == 0


async def test_empty_async_input_returns_an_empty_result() -> None:
    assert await batchkit(RunnableLambda(_upper)).abatch([]) == []


# -- ordering and keyed results --------------------------------------------------------------


async def test_results_keep_input_order_with_random_latencies() -> None:
    rng = random.Random(7)
    delays = [rng.uniform(0, 0.004) for _ in range(60)]

    async def slow_echo(i: int) -> str:
        await asyncio.sleep(delays[i])
        return f"out-{i}"

    results = await batchkit(RunnableLambda(slow_echo), max_concurrency=16, progress=False).abatch(
        list(range(60))
    )

    assert [r.index for r in results] == list(range(60))
    assert results.outputs == [f"out-{i}" for i in range(60)]


async def test_results_are_keyed_by_index_when_items_finish_in_reverse(probe: Probe) -> None:
    kit = batchkit(
        probe.runnable(lambda x: f"out-{x}", held=True), max_concurrency=5, progress=False
    )
    task = asyncio.create_task(kit.abatch([0, 1, 2, 3, 4]))
    await probe.wait_for_in_flight(5).wait()
    for i in reversed(range(5)):
        probe.gate(i).set()
        await asyncio.sleep(0)
    results = await task

    assert [(r.index, r.input, r.output) for r in results] == [(i, i, f"out-{i}") for i in range(5)]


def test_retry_failed_reruns_only_failed_rows_and_merges_by_index() -> None:
    # langchain-ai/langchain #35475: after a partial retry, RunnableRetry.batch can hand
    # one input another input's output. Ours merges by index: each input keeps its own.
    calls: dict[int, int] = {}

    def flaky(x: int) -> str:
        calls[x] = calls.get(x, 0) + 1
        if x in (1, 4) and calls[x] == 1:
            raise TimeoutError(f"transient {x}")
        return f"out-{x}"

    kit = batchkit(RunnableLambda(flaky), retry=None, progress=False)
    first = kit.batch([0, 1, 2, 3, 4, 5])
    assert [r.index for r in first.failed] == [1, 4]

    again = first.retry_failed()

    assert again.outputs == [f"out-{i}" for i in range(6)]
    assert all(r.output == f"out-{r.input}" for r in again)
    assert calls == {0: 1, 1: 2, 2: 1, 3: 1, 4: 2, 5: 1}
    assert [r.attempts for r in again] == [1, 2, 1, 1, 2, 1]
    error = again[1].history[0].error
    assert error is not None and error.message == "transient 1"
    assert first.outputs[1] is None  # the original result is a value: not mutated


async def test_aretry_failed_reruns_only_failed_rows() -> None:
    seen: list[int] = []

    async def flaky(x: int) -> int:
        seen.append(x)
        if x == 2 and seen.count(2) == 1:
            raise ConnectionError("reset")
        return x

    first = await batchkit(RunnableLambda(flaky), retry=None, progress=False).abatch([0, 1, 2])
    again = await first.aretry_failed()

    assert again.outputs == [0, 1, 2]
    assert sorted(seen) == [0, 1, 2, 2]


def test_retry_failed_with_nothing_failed_makes_no_calls() -> None:
    calls: list[int] = []
    results = batchkit(RunnableLambda(calls.append), progress=False).batch([1, 2])
    assert results.retry_failed() is results
    assert calls == [1, 2]


# -- concurrency caps ---------------------------------------------------------------------


async def test_never_runs_more_items_than_the_cap(probe: Probe) -> None:
    # Plain abatch without max_concurrency starts every coroutine at once.
    kit = batchkit(probe.runnable(), max_concurrency=3, progress=False)
    await kit.abatch(list(range(50)))
    assert probe.calls == 50
    assert probe.max_in_flight == 3


async def test_auto_concurrency_follows_the_size_rule(probe: Probe) -> None:
    await batchkit(probe.runnable(), progress=False).abatch(list(range(150)))
    assert probe.max_in_flight == 5


async def test_config_max_concurrency_is_used_when_the_kit_is_auto(probe: Probe) -> None:
    await batchkit(probe.runnable(), progress=False).abatch(
        list(range(30)), config={"max_concurrency": 2}
    )
    assert probe.max_in_flight == 2


async def test_explicit_int_wins_over_config_max_concurrency(probe: Probe) -> None:
    await batchkit(probe.runnable(), max_concurrency=4, progress=False).abatch(
        list(range(30)), config={"max_concurrency": 2}
    )
    assert probe.max_in_flight == 4


async def test_named_preset_sets_the_cap(probe: Probe) -> None:
    await batchkit(probe.runnable(), max_concurrency="sequential", progress=False).abatch(
        list(range(5))
    )
    assert probe.max_in_flight == 1


def test_sync_batch_runs_sync_chains_concurrently_up_to_the_cap() -> None:
    barrier = threading.Barrier(4, timeout=10)
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def blocking(x: int) -> int:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            if x < 4:
                barrier.wait()  # only passes if four calls run at the same time
            return x
        finally:
            with lock:
                state["now"] -= 1

    results = batchkit(RunnableLambda(blocking), max_concurrency=4, progress=False).batch(
        list(range(12))
    )
    assert results.outputs == list(range(12))
    assert state["max"] == 4


@pytest.mark.parametrize("bad", [0, -1, "fast", True, 2.5, None])
def test_invalid_max_concurrency_fails_at_construction(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        batchkit(RunnableLambda(_upper), max_concurrency=bad)


def test_wrapping_a_non_runnable_fails_clearly() -> None:
    with pytest.raises(ConfigurationError, match="wraps a Runnable"):
        batchkit(_upper)  # type: ignore[arg-type]


# -- cancellation and interruption --------------------------------------------------------


async def test_leaving_as_completed_early_cancels_pending_and_makes_no_more_calls(
    probe: Probe,
) -> None:
    # langchain-ai/langchain #35419: plain abatch_as_completed keeps paid calls running.
    kit = batchkit(probe.runnable(held=True), max_concurrency=4, progress=False)
    stream = kit.abatch_as_completed(list(range(100)))
    reached = probe.wait_for_in_flight(4)
    first = asyncio.ensure_future(anext(stream))
    await reached.wait()
    probe.gate(2).set()
    index, result = await first
    assert (index, result.output) == (2, 2)

    await stream.aclose()  # type: ignore[attr-defined]  # what `break` in `async for` does

    assert probe.cancelled == 3
    assert probe.in_flight == 0
    assert probe.calls == 4  # no new item starts while the consumer is away
    assert probe.started == [0, 1, 2, 3]


def test_leaving_sync_as_completed_early_cancels_pending(probe: Probe) -> None:
    def fail_fast(x: int) -> int:
        return x

    kit = batchkit(RunnableLambda(fail_fast), max_concurrency=2, progress=False)
    seen = []
    for index, _ in kit.batch_as_completed(list(range(1000))):
        seen.append(index)
        if len(seen) == 3:
            break
    assert len(seen) == 3
    # nothing keeps running after the loop: the driver's loop is closed
    assert threading.active_count() < 20


async def test_cancelling_abatch_cancels_items_in_flight_and_keeps_finished(
    probe: Probe,
) -> None:
    kit = batchkit(probe.runnable(held=True), max_concurrency=3, progress=False)
    reached = probe.wait_for_in_flight(3)
    task = asyncio.create_task(kit.abatch(list(range(10))))
    await reached.wait()
    probe.gate(0).set()
    await probe.wait_for_in_flight(4).wait()  # 0 finished, 3 took its slot

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert probe.cancelled == 3
    assert probe.calls == 4
    assert kit.last_run is not None
    assert not kit.last_run.complete
    assert [(r.index, r.output) for r in kit.last_run] == [(0, 0)]


def test_keyboard_interrupt_passes_through_and_keeps_finished_results() -> None:
    # langchain-ai/langchain #39691: return_exceptions treats BaseException as an output.
    def interrupt_at_5(x: int) -> int:
        if x == 5:
            raise KeyboardInterrupt
        return x

    kit = batchkit(RunnableLambda(interrupt_at_5), max_concurrency=1, progress=False)
    with pytest.raises(KeyboardInterrupt):
        kit.batch(list(range(10)))

    assert kit.last_run is not None
    assert not kit.last_run.complete
    assert kit.last_run.outputs == [0, 1, 2, 3, 4]
    assert all(r.ok for r in kit.last_run)


async def test_an_item_that_cancels_itself_is_an_error_not_an_output() -> None:
    async def self_cancel(x: int) -> int:
        if x == 1:
            raise asyncio.CancelledError
        return x

    results = await batchkit(RunnableLambda(self_cancel), progress=False).abatch([0, 1, 2])

    assert results.outputs == [0, None, 2]
    assert results[1].error is not None and results[1].error.type == "CancelledError"


# -- lazy inputs ---------------------------------------------------------------------------


async def test_generator_inputs_are_read_lazily(probe: Probe) -> None:
    produced: list[int] = []

    def gen() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    kit = batchkit(probe.runnable(held=True), max_concurrency=3, progress=False)
    stream = kit.astream_results(gen())
    nxt = asyncio.ensure_future(anext(stream))
    await probe.wait_for_in_flight(3).wait()
    assert produced == [0, 1, 2]
    probe.gate(1).set()
    assert (await nxt).index == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert len(produced) <= 4


async def test_async_iterable_inputs_are_accepted() -> None:
    async def agen() -> AsyncIterator[str]:
        for s in ("a", "b", "c"):
            yield s

    results = await batchkit(RunnableLambda(_upper), progress=False).abatch(agen())  # type: ignore[arg-type]
    assert results.outputs == ["A", "B", "C"]


def test_a_failing_input_iterator_is_reported_with_its_position() -> None:
    def broken() -> Iterator[str]:
        yield "a"
        yield "b"
        raise OSError("disk gone")

    kit = batchkit(RunnableLambda(_upper), max_concurrency=1, progress=False)
    with pytest.raises(InputSourceError, match=r"input #2 failed: OSError: disk gone"):
        kit.batch(broken())  # type: ignore[arg-type]
    assert kit.last_run is not None and kit.last_run.outputs == ["A", "B"]


def test_stream_results_yields_every_item_once() -> None:
    kit = batchkit(RunnableLambda(_upper), max_concurrency=4, progress=False)
    got = sorted((r.index, r.output) for r in kit.stream_results(iter("abcdef")))
    assert got == [(i, c.upper()) for i, c in enumerate("abcdef")]


# -- running inside an event loop (Jupyter) --------------------------------------------------


async def test_sync_batch_works_inside_a_running_event_loop() -> None:
    asyncio.get_running_loop()  # we are in one, as in a Jupyter cell
    results = batchkit(RunnableLambda(_upper), progress=False).batch(["a", "b"])
    assert results.outputs == ["A", "B"]


async def test_sync_as_completed_and_invoke_work_inside_a_running_event_loop() -> None:
    kit = batchkit(RunnableLambda(_upper), progress=False)
    assert sorted(i for i, _ in kit.batch_as_completed(["a", "b", "c"])) == [0, 1, 2]
    assert kit.invoke("x").output == "X"


# -- the wrapper as a Runnable --------------------------------------------------------------


def test_invoke_returns_one_item_result_and_never_raises() -> None:
    kit = batchkit(RunnableLambda(_upper))
    ok = kit.invoke("a")
    bad = kit.invoke(None)  # type: ignore[arg-type]
    assert isinstance(ok, ItemResult) and ok.output == "A" and ok.ok
    assert not bad.ok and bad.output is None


async def test_ainvoke_returns_one_item_result() -> None:
    result = await batchkit(RunnableLambda(_upper)).ainvoke("a")
    assert result.output == "A" and result.attempts == 1 and result.latency >= 0


def test_wrapper_stands_inside_an_lcel_chain_and_failures_flow_on_as_values() -> None:
    prep = RunnableLambda(lambda x: x.strip())
    post = RunnableLambda(lambda r: r.output if r.ok else f"failed: {r.error.type}")
    chain = prep | batchkit(RunnableLambda(lambda s: 1 / len(s))) | post

    assert chain.invoke(" ab ") == 0.5
    assert chain.batch([" ab ", "  "]) == [0.5, "failed: ZeroDivisionError"]


def test_token_usage_is_read_from_usage_metadata() -> None:
    results = batchkit(FakeChatModel(), progress=False).batch(["hello there", "hi"])
    assert results[0].usage is not None and results[0].usage.total_tokens > 0
    assert results.summary().usage.total_tokens == sum(
        r.usage.total_tokens for r in results if r.usage
    )


def test_return_exceptions_is_accepted_for_lcel_compatibility() -> None:
    kit = batchkit(RunnableLambda(_upper), progress=False)
    assert kit.batch(["a"], return_exceptions=True).outputs == ["A"]


# -- RunnableConfig propagation ---------------------------------------------------------------


class _RootRuns(BaseCallbackHandler):
    run_inline = True

    def __init__(self) -> None:
        self.roots: list[dict[str, Any]] = []

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if parent_run_id is None:
            self.roots.append({"tags": tags, "metadata": metadata, "name": kwargs.get("name")})


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_callers_config_reaches_every_item_with_its_index(mode: str) -> None:
    handler = _RootRuns()
    chain = ChatPromptTemplate.from_template("{x}") | FakeChatModel() | StrOutputParser()
    kit = batchkit(chain, progress=False)
    config: Any = {
        "callbacks": [handler],
        "tags": ["nightly"],
        "metadata": {"job": "j1"},
        "run_name": "caption",
    }
    inputs = [{"x": str(i)} for i in range(4)]
    if mode == "sync":
        kit.batch(inputs, config=config)
    else:
        await kit.abatch(inputs, config=config)

    assert len(handler.roots) == 4  # one trace run per item
    assert sorted(r["metadata"][INDEX_METADATA_KEY] for r in handler.roots) == [0, 1, 2, 3]
    assert all(r["metadata"]["job"] == "j1" for r in handler.roots)
    assert all("nightly" in r["tags"] for r in handler.roots)
    assert all(r["name"] == "caption" for r in handler.roots)


def test_one_config_per_input_is_honoured_and_length_checked() -> None:
    handler = _RootRuns()
    kit = batchkit(RunnableLambda(_upper), progress=False)
    configs: Any = [{"callbacks": [handler], "tags": [f"t{i}"]} for i in range(2)]
    kit.batch(["a", "b"], config=configs)
    assert sorted(r["tags"][0] for r in handler.roots) == ["t0", "t1"]

    with pytest.raises(ConfigurationError, match="2 configs for 3 inputs"):
        kit.batch(["a", "b", "c"], config=configs)


def test_token_usage_is_counted_through_a_parser_that_drops_it() -> None:
    chain = ChatPromptTemplate.from_template("say {w}") | FakeChatModel() | StrOutputParser()
    results = batchkit(chain, progress=False).batch([{"w": "hello there"}, {"w": "hi"}])
    assert all(isinstance(o, str) for o in results.outputs)
    assert results[0].usage is not None
    assert results[0].usage.total_tokens > 0
    assert results.summary().usage.total_tokens == sum(
        r.usage.total_tokens for r in results if r.usage
    )


def test_token_usage_adds_up_over_a_fan_out() -> None:
    model = FakeChatModel()
    single = batchkit(model, progress=False).invoke("abcd" * 10)
    triple = batchkit(RunnableParallel(a=model, b=model, c=model), progress=False).invoke(
        "abcd" * 10
    )
    assert single.usage is not None
    assert triple.usage is not None
    assert triple.usage.total_tokens == 3 * single.usage.total_tokens


@pytest.mark.parametrize("bad", [0, -1, "turbo"])
def test_a_bad_max_concurrency_in_the_call_config_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"config\['max_concurrency'\]"):
        batchkit(RunnableLambda(_upper)).batch(["a"], config={"max_concurrency": bad})
