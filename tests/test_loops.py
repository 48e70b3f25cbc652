"""One real ChatOpenAI, every way a user mixes sync and async calls with it.

langchain-openai caches one pooled async HTTP client per model configuration, bound
to the event loop that opened its connections. So the sync entry points (``batch``,
``invoke``) must never run the chain on a private loop: they run its own sync path
in worker threads, and the async ones run tasks on the caller's loop. Each test
shares one ``ChatOpenAI`` across its steps over real HTTP, as a user's script or
notebook would, and ends with every row answered.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel
from langchain_openai import ChatOpenAI

from langchain_batchkit import (
    BatchKit,
    BatchResult,
    ConfigurationError,
    ItemResult,
    RateLimit,
    batchkit,
)
from langchain_batchkit._errors import EventLoopMismatchError
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

REPO = Path(__file__).resolve().parent.parent
PROMPT = ChatPromptTemplate.from_template("question {n}")
Question = dict[str, Any]
Answers = BatchResult[Question, str]
XS: list[Question] = [{"n": i} for i in range(12)]
DONE_WITHIN = 30.0  # seconds a call that could deadlock gets before the test calls it hung


def chat(server: FakeOpenAIServer) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="sk-test",  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
        timeout=5.0,
    )


def answer(x: Question) -> str:
    return f"echo: question {x['n']}"  # the fake server echoes the last user message


def chain_kit(llm: ChatOpenAI, **options: Any) -> BatchKit[Question, str]:
    return batchkit(PROMPT | llm | StrOutputParser(), progress=False, **options)


def assert_all_answered(results: Answers, xs: list[Question]) -> None:
    assert isinstance(results, BatchResult), results  # not an exception from a thread
    assert results.failed == []
    assert results.outputs == [answer(x) for x in xs]


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``call`` in a daemon thread; its return value or exception lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)  # a deadlocked one must not block exit
    thread.start()
    return thread, outcome


def outcome_of(thread: threading.Thread, outcome: list[Any]) -> Any:
    """What the thread's call returned (or raised), once it ended; fails if it hung."""
    thread.join(DONE_WITHIN)
    assert not thread.is_alive(), "the call hung"
    [value] = outcome
    return value


def in_a_live_loop(call: Callable[[], Any]) -> Callable[[], Any]:
    """``call`` made synchronously from inside a running event loop (a Jupyter cell)."""

    async def cell() -> Any:
        return call()

    return lambda: asyncio.run(cell())


# -- mixing sync and async calls on one model -----------------------------------------------


def test_sync_then_async_then_sync_batches_share_one_model(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    kit = chain_kit(chat(fake_openai_server_factory()))

    first = kit.batch(XS)
    second = asyncio.run(kit.abatch(XS))
    third = kit.batch(XS)

    for results in (first, second, third):
        assert_all_answered(results, XS)


async def test_notebook_order_in_one_running_loop_answers_every_row(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    llm = chat(fake_openai_server_factory())
    kit = chain_kit(llm)

    warm_up = await llm.ainvoke("hello")  # opens the model's async client on this loop
    first = kit.batch(XS)  # a sync call from inside the running loop
    second = await kit.abatch(XS)
    third = kit.batch(XS)

    assert warm_up.content == "echo: hello"
    for results in (first, second, third):
        assert_all_answered(results, XS)


SETUP_CELL = """
import json
import langchain_batchkit
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
from langchain_batchkit import batchkit

assert langchain_batchkit.__file__.startswith({repo!r}), langchain_batchkit.__file__
llm = ChatOpenAI(
    base_url={base_url!r}, api_key="sk-test", model="gpt-4o-mini", max_retries=0, timeout=5.0
)
kit = batchkit(ChatPromptTemplate.from_template("question {{n}}") | llm | StrOutputParser(),
               progress=False)
xs = [{{"n": i}} for i in range(12)]
expected = [f"echo: question {{i}}" for i in range(12)]
"""
NOTEBOOK_CELLS = [
    "warm_up = await llm.ainvoke('hello')",
    "first = kit.batch(xs)",
    "second = await kit.abatch(xs)",
    "third = kit.batch(xs)",
    """
runs = [first, second, third]
print(json.dumps({
    "warm_up": warm_up.content,
    "failed": [len(r.failed) for r in runs],
    "errors": [str(f.error) for r in runs for f in r.failed][:3],
    "all_answered": [r.outputs == expected for r in runs],
}))
""",
]


def test_notebook_order_in_a_jupyter_kernel_answers_every_row(
    fake_openai_server_factory: FakeServerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    server = fake_openai_server_factory()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the kernel inherits this env
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kernel imports this checkout's code
    setup = SETUP_CELL.format(repo=str(REPO), base_url=server.base_url)
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in [setup, *NOTEBOOK_CELLS]]
    )
    nbformat.write(nb, tmp_path / "loops.ipynb")
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )

    client.execute()

    last = nb.cells[-1].outputs
    report = json.loads("".join(o.get("text", "") for o in last if o.output_type == "stream"))
    assert report == {
        "warm_up": "echo: hello",
        "failed": [0, 0, 0],
        "errors": [],
        "all_answered": [True, True, True],
    }


# -- threads -------------------------------------------------------------------------------


def test_sync_batches_from_three_threads_one_after_another(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    kit = chain_kit(chat(fake_openai_server_factory()))

    runs = [outcome_of(*in_thread(lambda: kit.batch(XS))) for _ in range(3)]

    for results in runs:
        assert_all_answered(results, XS)


def test_sync_batches_from_two_threads_at_once(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    llm = chat(fake_openai_server_factory())
    both_running = threading.Barrier(2, timeout=DONE_WITHIN)

    def meet(x: Question) -> Question:
        if x["n"] == 0:  # item 0 of each batch waits for the other's: the batches overlap
            both_running.wait()
        return x

    kit = batchkit(RunnableLambda(meet) | PROMPT | llm | StrOutputParser(), progress=False)

    started = [in_thread(lambda: kit.batch(XS)) for _ in range(2)]
    runs = [outcome_of(*thread_and_outcome) for thread_and_outcome in started]

    for results in runs:
        assert_all_answered(results, XS)


# -- the kit inside other runnables ---------------------------------------------------------


def test_kit_inside_runnable_parallel_batch(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    kit = chain_kit(chat(fake_openai_server_factory()))

    outputs = RunnableParallel(a=kit).batch(XS, {"max_concurrency": 4})

    assert [sorted(out) for out in outputs] == [["a"]] * len(XS)
    rows = [out["a"] for out in outputs]
    assert all(isinstance(row, ItemResult) for row in rows)
    assert [row.error for row in rows] == [None] * len(XS)
    assert all(row.ok for row in rows)
    assert [row.output for row in rows] == [answer(x) for x in XS]


Outer = BatchKit[int, Answers]


def nested_kits(llm: ChatOpenAI) -> tuple[Outer, Callable[[int], list[Question]]]:
    """An outer kit whose sync step runs an inner kit's sync batch over the same model."""
    inner = chain_kit(llm)

    def inner_inputs(i: int) -> list[Question]:
        return [{"n": f"{i}.{j}"} for j in range(6)]

    def fan_out(i: int) -> Answers:
        return inner.batch(inner_inputs(i))

    # Three outer steps at a time: later inner batches reuse pooled connections that
    # earlier ones opened, which is where a loop-bound client used to break.
    outer = batchkit(RunnableLambda(fan_out), max_concurrency=3, progress=False)
    return outer, inner_inputs


def test_sync_batch_nested_in_a_sync_batch_step(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    outer, inner_inputs = nested_kits(chat(fake_openai_server_factory()))

    results = outer.batch(list(range(6)))

    assert results.failed == []
    for row in results:
        assert row.output is not None
        assert_all_answered(row.output, inner_inputs(row.input))


async def test_sync_batch_nested_in_an_async_batch_step(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    outer, inner_inputs = nested_kits(chat(fake_openai_server_factory()))

    results = await outer.abatch(list(range(6)))

    assert results.failed == []
    for row in results:
        assert row.output is not None
        assert_all_answered(row.output, inner_inputs(row.input))


# -- an async step calling a sync kit: the old deadlock --------------------------------------


def test_sync_batch_of_an_async_only_chain_in_a_live_loop_raises_instead_of_hanging(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    inner = chain_kit(chat(fake_openai_server_factory()))

    async def ask(x: Question) -> str | None:
        return inner.invoke(x).output  # a sync kit call inside an async step

    kit = batchkit(RunnableLambda(ask), progress=False)

    raised = outcome_of(*in_thread(in_a_live_loop(lambda: kit.batch(XS))))

    assert isinstance(raised, ConfigurationError)
    assert "await kit.abatch" in str(raised)


def test_sync_batch_in_a_live_loop_runs_a_chain_with_both_paths_calling_a_sync_kit(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    inner = chain_kit(chat(fake_openai_server_factory()))

    def ask(x: Question) -> str | None:
        return inner.invoke(x).output

    async def aask(x: Question) -> str | None:
        return inner.invoke(x).output  # a sync kit call inside an async step

    kit = batchkit(RunnableLambda(ask, afunc=aask), progress=False)

    results = outcome_of(*in_thread(in_a_live_loop(lambda: kit.batch(XS))))

    assert_all_answered(results, XS)


# -- RateLimit(max_in_flight) on every path -------------------------------------------------


def slow_server(factory: FakeServerFactory) -> FakeOpenAIServer:
    """Answers after 50 ms, so eight workers would overlap far past the cap without it."""
    return factory(FakeServerConfig(latency=0.05))


def test_in_flight_cap_holds_for_a_sync_batch(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = slow_server(fake_openai_server_factory)
    limit = RateLimit(max_in_flight=2)
    kit = chain_kit(chat(server), rate_limit=limit, max_concurrency=8)

    results = kit.batch(XS)

    assert_all_answered(results, XS)
    assert server.stats().max_in_flight == 2
    assert limit.stats().in_flight == 0


async def test_in_flight_cap_holds_for_an_async_batch_of_a_sync_step(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = slow_server(fake_openai_server_factory)
    llm = chat(server)
    limit = RateLimit(max_in_flight=2)

    def ask(x: Question) -> str:  # no afunc: ainvoke runs it in an executor thread
        return str(llm.invoke(f"question {x['n']}").content)

    kit = batchkit(RunnableLambda(ask), rate_limit=limit, max_concurrency=8, progress=False)

    results = await kit.abatch(XS)

    assert_all_answered(results, XS)
    assert server.stats().max_in_flight == 2
    assert limit.stats().in_flight == 0


def test_in_flight_cap_holds_for_a_parallel_fan_out_in_a_sync_batch(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = slow_server(fake_openai_server_factory)
    llm = chat(server)
    limit = RateLimit(max_in_flight=2)
    both: Runnable[Question, dict[str, str]] = PROMPT | RunnableParallel(
        a=llm | StrOutputParser(), b=llm | StrOutputParser()
    )
    kit = batchkit(both, rate_limit=limit, max_concurrency=8, progress=False)

    results = kit.batch(XS)

    assert results.failed == []
    assert results.outputs == [{"a": answer(x), "b": answer(x)} for x in XS]
    assert server.stats().max_in_flight == 2
    assert server.stats().total_requests == 2 * len(XS)
    assert limit.stats().in_flight == 0


# -- two event loops, one model ---------------------------------------------------------------


def test_async_batch_on_a_second_loop_stops_with_one_clear_error(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory()
    kit = chain_kit(chat(server), max_concurrency=4)
    assert_all_answered(asyncio.run(kit.abatch(XS)), XS)  # the model's client joins this loop
    sent_by_first_run = server.stats().total_requests

    with pytest.raises(EventLoopMismatchError) as raised:
        asyncio.run(kit.abatch(XS))  # a new loop: the cached client's loop is closed

    assert isinstance(raised.value, RuntimeError)
    message = str(raised.value)
    assert "Event loop is closed" in message
    assert "inside one event loop" in message and "kit.batch" in message
    assert server.stats().total_requests - sent_by_first_run <= 4  # stopped at once ...
    assert kit.last_run is not None and not kit.last_run.complete
    assert kit.last_run.failed == []  # ... without a failed row per item


def test_the_advised_sync_batch_works_after_a_loop_mismatch(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    kit = chain_kit(chat(fake_openai_server_factory()))
    asyncio.run(kit.abatch(XS))
    with pytest.raises(EventLoopMismatchError):
        asyncio.run(kit.abatch(XS))

    assert_all_answered(kit.batch(XS), XS)
