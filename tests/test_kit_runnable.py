"""The kit is a real Runnable: one run per item, the caller's run id, events, schemas, options."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import openai
import pytest
from httpx2 import Request, Response
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import ConfigurableField, RunnableLambda
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from langchain_openai import ChatOpenAI

from langchain_batchkit import (
    Checkpoint,
    ConfigurationError,
    ItemResult,
    RetryPolicy,
    batchkit,
)
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer


class Recorder(BaseTracer):
    """A tracer that keeps every run it sees, and the root runs when they end."""

    def __init__(self) -> None:
        super().__init__()
        self.roots: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        self.roots.append(run)


def server_error() -> openai.InternalServerError:
    request = Request("POST", "http://fake/v1/chat/completions")
    return openai.InternalServerError("boom", response=Response(500, request=request), body=None)


def fails_first_time() -> tuple[RunnableLambda[Any, Any], dict[Any, int]]:
    calls: dict[Any, int] = {}

    def run(x: Any) -> Any:
        calls[x] = calls.get(x, 0) + 1
        if calls[x] == 1:
            raise server_error()
        return x

    return RunnableLambda(run, name="flaky"), calls


def fake_retry(clock: FakeClock) -> RetryPolicy:
    return RetryPolicy(clock=clock, sleep=clock.sleep, seed=0)


# -- one run per item ---------------------------------------------------------------------------


def test_each_item_is_one_root_run_with_its_attempts_as_children() -> None:
    chain, _ = fails_first_time()
    kit = batchkit(chain, retry=fake_retry(FakeClock()), progress=False)
    tracer = Recorder()

    results = kit.batch([1, 2, 3], config={"callbacks": [tracer]})

    assert [r.attempts for r in results] == [2, 2, 2]
    assert len(tracer.roots) == 3  # not 6: retries are children of the item's run
    for root in tracer.roots:
        assert root.name == "batchkit(flaky)"
        assert [c.name for c in root.child_runs] == ["flaky", "flaky"]
        assert "retry:attempt:2" in (root.child_runs[1].tags or [])
        assert root.child_runs[0].error is not None


async def test_async_items_are_root_runs_too() -> None:
    chain, _ = fails_first_time()
    kit = batchkit(chain, retry=fake_retry(FakeClock()), progress=False)
    tracer = Recorder()

    await kit.abatch([1, 2, 3], config={"callbacks": [tracer]})

    assert sorted(r.name for r in tracer.roots) == ["batchkit(flaky)"] * 3


def test_invoke_honours_the_callers_run_id() -> None:
    kit = batchkit(RunnableLambda(lambda x: x), progress=False)
    tracer = Recorder()
    run_id = uuid.uuid4()

    kit.invoke(1, config={"callbacks": [tracer], "run_id": run_id})

    assert [r.id for r in tracer.roots] == [run_id]


async def test_ainvoke_honours_the_callers_run_id() -> None:
    kit = batchkit(RunnableLambda(lambda x: x), progress=False)
    tracer = Recorder()
    run_id = uuid.uuid4()

    await kit.ainvoke(1, config={"callbacks": [tracer], "run_id": run_id})

    assert [r.id for r in tracer.roots] == [run_id]


async def test_astream_events_start_and_end_with_the_kits_run() -> None:
    kit: Any = batchkit(RunnableLambda(lambda x: x * 2), progress=False)

    events = [e async for e in kit.astream_events(21, version="v2")]

    assert (events[0]["event"], events[0]["name"]) == ("on_chain_start", kit.name)
    assert (events[-1]["event"], events[-1]["name"]) == ("on_chain_end", kit.name)
    final = events[-1]["data"]["output"]
    assert isinstance(final, ItemResult) and final.output == 42


def test_with_listeners_sees_the_kits_run() -> None:
    ended: list[tuple[str, Any]] = []
    kit: Any = batchkit(RunnableLambda(lambda x: x + 1), progress=False)
    listened = kit.with_listeners(on_end=lambda run: ended.append((run.name, run.outputs)))

    result = listened.invoke(1)

    assert result.output == 2
    assert [name for name, _ in ended] == [kit.name]


# -- schemas ----------------------------------------------------------------------------------


def test_the_output_json_schema_describes_an_item_result() -> None:
    kit = batchkit(ChatPromptTemplate.from_template("{x}") | RunnableLambda(str), progress=False)

    schema = kit.get_output_jsonschema()

    assert {"index", "input", "output", "error", "attempts", "usage", "history"} <= set(
        schema["properties"]
    )


def test_the_output_json_schema_describes_history_as_attempts_and_the_cost() -> None:
    kit = batchkit(RunnableLambda(str), progress=False)

    schema = kit.get_output_jsonschema()

    assert "cost" in schema["properties"]
    attempt = schema["$defs"]["AttemptSchema"]["properties"]
    assert {"error", "output", "usage", "cost", "latency"} == set(attempt)


def test_config_specs_are_the_wrapped_chains() -> None:
    prompt = PromptTemplate.from_template("{x}").configurable_fields(
        template=ConfigurableField(id="template")
    )
    kit = batchkit(prompt, progress=False)

    assert [s.id for s in kit.config_specs] == ["template"]
    assert "template" in str(kit.config_schema().model_json_schema())


# -- options per call --------------------------------------------------------------------------


def test_kit_options_passed_to_batch_apply_to_that_call_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def plain(x: int) -> int:  # accepts no keywords: options must not reach it
        return x

    kit = batchkit(RunnableLambda(plain), progress=True)

    results = kit.batch(list(range(20)), progress=False, max_concurrency=3, desc="mine")

    assert results.failed == []
    assert capsys.readouterr().err == ""  # no bar for this call
    assert kit.options.progress is True  # the kit is unchanged
    kit.batch(list(range(20)))
    assert "plain" in capsys.readouterr().err


def test_max_concurrency_per_call_caps_worker_threads() -> None:
    lock = threading.Lock()
    state = {"now": 0, "most": 0}
    three_in = threading.Barrier(3, timeout=10)

    def tracked(x: int) -> int:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        if x < 3:
            three_in.wait()  # the first three overlap for sure
        with lock:
            state["now"] -= 1
        return x

    kit = batchkit(RunnableLambda(tracked), max_concurrency=10, progress=False)

    kit.batch(list(range(30)), max_concurrency=3)

    assert state["most"] == 3


def test_other_keywords_go_to_the_chain() -> None:
    def shout(x: str, *, suffix: str) -> str:
        return x + suffix

    chain: Any = RunnableLambda(shout)  # type: ignore[arg-type]
    results = batchkit(chain, progress=False).batch(["a", "b"], suffix="!")

    assert results.outputs == ["a!", "b!"]


def test_a_keyword_the_chain_rejects_stops_the_run_at_once() -> None:
    calls: list[int] = []

    def plain(x: int) -> int:
        calls.append(x)
        return x

    kit = batchkit(RunnableLambda(plain), max_concurrency=2, progress=False)

    with pytest.raises(ConfigurationError, match="'bogus'"):
        kit.batch(list(range(100)), bogus=1)
    assert len(calls) == 0  # RunnableLambda fails before calling; nothing became a row


def test_a_keyword_the_model_client_rejects_stops_the_run(
    fake_openai_server: FakeOpenAIServer,
) -> None:
    llm = ChatOpenAI(
        base_url=fake_openai_server.base_url,
        api_key="sk-test",  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
    )
    kit = batchkit(llm, max_concurrency=4)

    with pytest.raises(ConfigurationError, match="'bogus_param'"):
        kit.batch([f"q{i}" for i in range(30)], bogus_param=1, progress=False)
    assert fake_openai_server.stats().total_requests == 0


def test_batch_of_none_says_what_to_pass() -> None:
    kit = batchkit(RunnableLambda(lambda x: x), progress=False)

    with pytest.raises(ConfigurationError, match="iterable of inputs"):
        kit.batch(None)  # type: ignore[arg-type]


def test_options_are_read_only_and_with_options_makes_a_new_kit() -> None:
    kit = batchkit(RunnableLambda(lambda x: x), progress=False)

    with pytest.raises(AttributeError, match="with_options"):
        kit.retry = RetryPolicy(max_attempts=4)  # type: ignore[misc]
    patient = kit.with_options(retry=RetryPolicy(max_attempts=4))

    assert patient.retry is not None and patient.retry.max_attempts == 4
    assert kit.retry is not None and kit.retry.max_attempts == RetryPolicy().max_attempts
    with pytest.raises(ConfigurationError, match="unknown option"):
        kit.with_options(retries=4)


# -- the sync driver --------------------------------------------------------------------------


def test_an_async_only_chain_on_the_sync_path_fails_once_pointing_to_abatch() -> None:
    async def only_async(x: int) -> int:
        return x

    kit = batchkit(RunnableLambda(only_async), progress=False)

    with pytest.raises(ConfigurationError, match="abatch"):
        kit.batch(list(range(50)))
    with pytest.raises(ConfigurationError, match="abatch"):
        kit.invoke(1)


def test_a_retry_wait_does_not_hold_a_worker() -> None:
    clock = FakeClock()
    order: list[int] = []
    seen: set[int] = set()

    def run(x: int) -> int:
        order.append(x)
        if x == 0 and x not in seen:
            seen.add(x)
            raise server_error()
        return x

    kit = batchkit(RunnableLambda(run), max_concurrency=1, retry=fake_retry(clock), progress=False)

    results = kit.batch([0, 1, 2])

    assert results.outputs == [0, 1, 2]
    assert order[:2] == [0, 1]  # 1 ran while 0 waited out its backoff
    assert order.count(0) == 2


def test_ctrl_c_on_the_sync_driver_returns_promptly_and_keeps_finished(tmp_path: Any) -> None:
    release = threading.Event()
    abandoned_done = threading.Event()

    def run(x: int) -> int:
        if x == 1:
            release.wait(30)
            abandoned_done.set()
        return x

    def interrupt(event: Any) -> None:
        if event.kind == "done" and event.completed == 2:
            raise KeyboardInterrupt

    checkpoint = Checkpoint(tmp_path / "run.sqlite")
    kit = batchkit(
        RunnableLambda(run),
        max_concurrency=2,
        on_progress=interrupt,
        checkpoint=checkpoint,
        progress=False,
    )

    with pytest.raises(KeyboardInterrupt):
        kit.batch(list(range(10)))

    assert not release.is_set()  # returned while item 1 was still inside invoke
    assert kit.last_run is not None and not kit.last_run.complete
    finished = sorted(r.index for r in kit.last_run)
    assert 1 not in finished and len(finished) >= 2
    assert checkpoint.counts() == (len(finished), 0)  # committed before propagating
    release.set()
    assert abandoned_done.wait(10)
    assert sorted(r.index for r in kit.last_run) == finished  # the abandoned one is not recorded


def test_sync_retries_honour_retry_after_on_the_clock() -> None:
    clock = FakeClock()
    request = Request("POST", "http://fake/v1/chat/completions")
    busy = openai.RateLimitError(
        "slow down",
        response=Response(429, headers={"retry-after": "7"}, request=request),
        body=None,
    )
    calls: list[int] = []

    def run(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise busy
        return x

    result = batchkit(RunnableLambda(run), retry=fake_retry(clock), progress=False).invoke(1)

    assert result.ok and result.attempts == 2
    assert 7.0 <= clock.sleeps[0] <= 7.7


async def test_the_async_driver_still_cancels_a_single_item_task_cleanly() -> None:
    started = asyncio.Event()

    async def slow(x: int) -> int:
        started.set()
        await asyncio.Event().wait()
        return x

    kit = batchkit(RunnableLambda(slow), progress=False)
    task = asyncio.create_task(kit.ainvoke(1))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
