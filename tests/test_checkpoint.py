"""Checkpoint and resume: committed results, exactly-once resumes, refusals, exports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from pydantic import BaseModel

from langchain_batchkit import Checkpoint, CheckpointError, ConfigurationError, batchkit
from langchain_batchkit._serialize import dumps_value, loads_value
from langchain_batchkit.testing import FakeChatModel
from tests.conftest import Probe


class Counting:
    def __init__(self, fail: set[Any] = frozenset()) -> None:  # type: ignore[assignment]
        self.calls: list[Any] = []
        self.fail = set(fail)

    def runnable(self) -> RunnableLambda[Any, Any]:
        def double(x: Any) -> Any:
            self.calls.append(x)
            if x in self.fail:
                raise ValueError(f"bad {x}")
            return x * 2

        return RunnableLambda(double, name="double")


class Caption(BaseModel):
    text: str
    score: float


def test_a_second_run_skips_what_the_first_finished(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    first = Counting(fail={3})
    batchkit(first.runnable(), checkpoint=path, progress=False).batch(list(range(10)))
    assert len(first.calls) == 10

    second = Counting()
    results = batchkit(second.runnable(), checkpoint=path, progress=False).batch(list(range(15)))

    assert second.calls == [10, 11, 12, 13, 14]  # only the new ones
    assert [r.index for r in results] == list(range(15))  # every item exactly once
    assert results.outputs == [None if i == 3 else i * 2 for i in range(15)]
    assert results[3].error is not None and results[3].error.message == "bad 3"
    assert [r.key for r in results] == [str(i) for i in range(15)]


def test_failed_items_rerun_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    batchkit(Counting(fail={2, 5}).runnable(), checkpoint=path, progress=False).batch(
        list(range(8))
    )
    again = Counting()
    kit = batchkit(again.runnable(), checkpoint=path, retry_failed=True, progress=False)
    results = kit.batch(list(range(8)))
    assert again.calls == [2, 5]
    assert results.outputs == [i * 2 for i in range(8)]


def test_batch_result_retry_failed_updates_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    flaky = Counting(fail={1})
    kit = batchkit(flaky.runnable(), checkpoint=path, progress=False)
    first = kit.batch([0, 1, 2])
    flaky.fail.clear()
    merged = first.retry_failed()
    assert merged.outputs == [0, 2, 4]
    assert Checkpoint(path).counts() == (3, 0)


def test_a_key_function_resumes_a_reordered_input(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    rows: list[dict[str, Any]] = [{"id": f"doc-{i}", "n": i} for i in range(6)]

    def runnable(calls: list[str]) -> RunnableLambda[Any, Any]:
        def work(row: dict[str, Any]) -> int:
            calls.append(row["id"])
            return int(row["n"]) * 10

        return RunnableLambda(work, name="work")

    first: list[str] = []
    kit = batchkit(runnable(first), checkpoint=path, key=lambda r: r["id"], progress=False)
    kit.batch(rows[:4])

    second: list[str] = []
    kit = batchkit(runnable(second), checkpoint=path, key=lambda r: r["id"], progress=False)
    shuffled = [rows[5], rows[2], rows[0], rows[4], rows[3], rows[1]]
    results = kit.batch(shuffled)

    assert sorted(second) == ["doc-4", "doc-5"]
    assert [r.output for r in results] == [r["n"] * 10 for r in shuffled]
    assert [r.index for r in results] == list(range(6))  # indices of *this* input


def test_key_function_must_return_str(tmp_path: Path) -> None:
    kit = batchkit(RunnableLambda(lambda x: x), checkpoint=tmp_path / "c.sqlite", key=lambda x: x)
    with pytest.raises(ConfigurationError, match="key= must return a str"):
        kit.batch([1])


def test_key_needs_a_checkpoint() -> None:
    with pytest.raises(ConfigurationError, match="pass checkpoint= too"):
        batchkit(RunnableLambda(lambda x: x), key=str)


def test_messages_pydantic_and_json_values_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    values: list[Any] = [
        {"a": [1, 2.5, None, "x"]},
        Caption(text="a cat", score=0.9),
        b"\x89PNG",
        ("tuple", 1),
        {"msg": AIMessage("hi")},
    ]
    kit = batchkit(RunnableLambda(lambda i: values[i], name="pick"), checkpoint=path)
    kit.batch(list(range(len(values))))
    stored = [r.output for r in Checkpoint(path).iter_results()]
    assert stored == values
    assert isinstance(stored[1], Caption)


def test_chat_model_messages_keep_their_usage(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    batchkit(FakeChatModel(), checkpoint=path, progress=False).batch(["hello", "world"])
    resumed = batchkit(FakeChatModel(), checkpoint=path, progress=False).batch(["hello", "world"])
    assert isinstance(resumed[0].output, AIMessage)
    assert resumed[0].output.content == "echo: hello"
    assert resumed[0].output.usage_metadata is not None
    assert resumed[0].usage is not None and resumed[0].usage.total_tokens > 0


def test_unserializable_outputs_keep_their_repr() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "Thing()"

    assert loads_value(dumps_value(Thing())) == "Thing()"


def test_a_checkpoint_from_another_chain_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    batchkit(RunnableLambda(lambda x: x, name="one"), checkpoint=path).batch([1])
    other = batchkit(RunnableLambda(lambda x: -x, name="two"), checkpoint=path)
    with pytest.raises(CheckpointError, match="different chain"):
        other.batch([1])


def test_a_fixed_fingerprint_resumes_on_purpose(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    batchkit(RunnableLambda(lambda x: x, name="one"), checkpoint=path).batch([1])
    with closing(sqlite3.connect(path)) as db:
        stored = db.execute("SELECT value FROM meta WHERE name='fingerprint'").fetchone()[0]
    kit = batchkit(
        RunnableLambda(lambda x: -x, name="two"), checkpoint=Checkpoint(path, fingerprint=stored)
    )
    assert kit.batch([1, 2]).outputs == [1, -2]


def test_another_layout_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    batchkit(RunnableLambda(lambda x: x), checkpoint=path).batch([1])
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value='99' WHERE name='schema_version'")
        db.commit()
    with pytest.raises(CheckpointError, match="layout version 99"):
        batchkit(RunnableLambda(lambda x: x), checkpoint=path).batch([1])


def test_a_corrupt_file_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(CheckpointError, match="not a readable SQLite file"):
        batchkit(RunnableLambda(lambda x: x), checkpoint=path).batch([1])


async def test_a_file_in_use_by_another_run_is_refused(tmp_path: Path, probe: Probe) -> None:
    path = tmp_path / "run.sqlite"
    running = batchkit(probe.runnable(held=True), checkpoint=path, progress=False)
    task = asyncio.create_task(running.abatch([1]))
    await probe.wait_for_in_flight(1).wait()
    with pytest.raises(CheckpointError, match=r"already open|locked"):
        await running.abatch([2])
    other = batchkit(RunnableLambda(lambda x: x), checkpoint=Checkpoint(path), progress=False)
    with pytest.raises(CheckpointError, match="locked"):
        await other.abatch([3])
    probe.gate(1).set()
    assert (await task).outputs == [1]


def test_bad_checkpoint_options_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="chunk_size"):
        Checkpoint(tmp_path / "c.sqlite", chunk_size=0)
    with pytest.raises(ConfigurationError, match="checkpoint must be a path"):
        batchkit(RunnableLambda(lambda x: x), checkpoint=42)  # type: ignore[arg-type]


def test_run_keeps_counts_not_outputs_and_the_checkpoint_has_everything(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    kit = batchkit(Counting(fail={7}).runnable(), checkpoint=path, progress=False)
    report = kit.run(iter(range(1000)))
    assert (report.summary.total, report.summary.succeeded, report.summary.failed) == (
        1000,
        999,
        1,
    )
    assert [r.index for r in report.failures] == [7]
    assert Checkpoint(path).counts() == (999, 1)


def test_export_to_jsonl_streams_every_item(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    batchkit(Counting(fail={1}).runnable(), checkpoint=path).batch([0, 1, 2])
    n = Checkpoint(path).to_jsonl(tmp_path / "out.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert n == 3
    assert [(r["index"], r["ok"], r["output"]) for r in lines] == [
        (0, True, 0),
        (1, False, None),
        (2, True, 4),
    ]
    assert lines[1]["error_message"] == "bad 1"
    frame = Checkpoint(path).to_pandas()
    assert list(frame["index"]) == [0, 1, 2]


def test_keyboard_interrupt_commits_what_finished_and_resume_finishes_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.sqlite"

    calls: list[int] = []
    interrupt = [True]

    def inc(x: int) -> int:
        if x == 40 and interrupt[0]:
            raise KeyboardInterrupt  # Ctrl-C arriving while item 40 runs
        calls.append(x)
        return x + 1

    def make_kit() -> Any:
        ckpt = Checkpoint(path, chunk_size=16)
        return batchkit(RunnableLambda(inc), checkpoint=ckpt, max_concurrency=1, progress=False)

    with pytest.raises(KeyboardInterrupt):
        make_kit().batch(list(range(100)))
    assert Checkpoint(path).counts() == (40, 0)  # the partial chunk was committed too

    interrupt[0] = False
    calls.clear()
    resumed = make_kit().batch(list(range(100)))
    assert calls == list(range(40, 100))
    assert resumed.outputs == [x + 1 for x in range(100)]


CHILD = textwrap.dedent(
    """
    import sys
    from langchain_core.runnables import RunnableLambda
    from langchain_batchkit import Checkpoint, batchkit

    def work(x):
        return f"out-{x}"

    def on_progress(event):
        if event.completed == 300:
            print("committed-some", flush=True)  # the parent kills us on this line
            sys.stdin.readline()  # and we wait here for the kill

    kit = batchkit(RunnableLambda(work, name="work"), checkpoint=Checkpoint(sys.argv[1],
                   chunk_size=25), max_concurrency=8, progress=False, on_progress=on_progress)
    kit.run(range(1000))
    """
)


def test_a_run_killed_with_sigkill_resumes_with_every_item_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "committed-some"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    ok, failed = Checkpoint(path).counts()
    assert 275 <= ok <= 300 and failed == 0  # whole chunks committed before the kill

    calls: list[int] = []

    def work(x: int) -> str:
        calls.append(x)
        return f"out-{x}"

    results = batchkit(RunnableLambda(work, name="work"), checkpoint=path, progress=False).batch(
        list(range(1000))
    )
    assert len(calls) == 1000 - ok  # nothing finished is redone
    assert [r.index for r in results] == list(range(1000))
    assert results.outputs == [f"out-{i}" for i in range(1000)]
    assert Checkpoint(path).counts() == (1000, 0)


# -- streaming order ---------------------------------------------------------------------


async def test_ordered_stream_yields_in_input_order() -> None:
    import random

    rng = random.Random(3)
    delays = [rng.uniform(0, 0.003) for _ in range(40)]

    async def slow(i: int) -> int:
        await asyncio.sleep(delays[i])
        return i

    kit = batchkit(RunnableLambda(slow), max_concurrency=8, progress=False)
    got = [r.index async for r in kit.astream_results(range(40), ordered=True)]
    assert got == list(range(40))


async def test_reorder_buffer_bounds_how_far_ahead_items_start(probe: Probe) -> None:
    kit = batchkit(probe.runnable(held=True), max_concurrency=10, progress=False)
    stream = kit.astream_results(iter(range(100)), ordered=True, reorder_buffer=5)
    first = asyncio.ensure_future(anext(stream))
    await probe.wait_for_in_flight(5).wait()
    for i in range(1, 5):
        probe.gate(i).set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert probe.started == [0, 1, 2, 3, 4]  # item 0 holds the buffer: nothing else starts
    probe.gate(0).set()
    assert (await first).index == 0
    await stream.aclose()  # type: ignore[attr-defined]


def test_sync_ordered_stream() -> None:
    kit: Any = batchkit(RunnableLambda(lambda x: x * 3), max_concurrency=4, progress=False)
    assert [r.output for r in kit.stream_results(range(10), ordered=True)] == [
        x * 3 for x in range(10)
    ]


# -- found in review: never mix inputs, never lose a row to a format --------------------------


def test_a_checkpoint_for_another_input_list_is_refused_not_mixed(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    kit = batchkit(RunnableLambda(str.upper, name="up"), checkpoint=path, progress=False)
    kit.batch(["apple", "banana"])
    with pytest.raises(CheckpointError, match="different input at index 0"):
        kit.batch(["cherry", "damson"])


def test_an_output_that_fails_to_serialise_is_kept_as_repr(tmp_path: Path) -> None:
    class Odd(BaseModel):  # defined in a function: its class path cannot be imported back
        text: str

    path = tmp_path / "run.sqlite"

    def make(s: str) -> Odd:
        return Odd(text=s)

    kit: Any = batchkit(RunnableLambda(make), checkpoint=path)
    results = kit.batch(["x", "y"])
    assert all(r.ok for r in results)
    resumed: Any = batchkit(RunnableLambda(make), checkpoint=path)
    assert [r.output for r in resumed.batch(["x", "y"])] == ["Odd(text='x')", "Odd(text='y')"]


def test_an_unreadable_row_is_run_again_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    calls: list[int] = []

    def same(x: int) -> int:
        calls.append(x)
        return x

    batchkit(RunnableLambda(same), checkpoint=path).batch([1, 2])
    calls.clear()
    with closing(sqlite3.connect(path)) as db:
        db.execute(
            """UPDATE items SET output='{"pydantic":"nowhere:Gone","data":{}}' WHERE key='1'"""
        )
        db.commit()
    kit = batchkit(RunnableLambda(same), checkpoint=path)
    assert kit.batch([1, 2]).outputs == [1, 2]
    assert calls == [2]


async def test_items_finishing_as_a_run_is_cancelled_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    gate = asyncio.Event()

    async def wait(x: int) -> int:
        await gate.wait()
        return x

    kit = batchkit(RunnableLambda(wait), checkpoint=path, max_concurrency=3, progress=False)
    task = asyncio.create_task(kit.abatch([0, 1, 2]))
    for _ in range(10):
        await asyncio.sleep(0)
    gate.set()  # all three finish in the same tick as the cancel
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = Checkpoint(path).counts()[0]
    assert kit.last_run is not None
    assert len(kit.last_run) == kept  # what the checkpoint kept, last_run shows too
