"""When a checkpoint commits: on count or on time, and never all-or-nothing.

A row only survives a crash once it is committed, so rows must not wait for a
full chunk when items finish slowly, and one row SQLite refuses must cost that
row, not its chunk and every commit after it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from langchain_batchkit import Checkpoint, ConfigurationError, ItemResult, batchkit
from langchain_batchkit.testing import FakeClock

ROOT = Path(__file__).parent.parent


def committed(path: Path) -> int:
    """Rows another process would see now: a second, read-only connection."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.2)) as db:
            return int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
    except sqlite3.Error:
        return 0  # not created yet


def done(index: int, output: Any = None) -> ItemResult[Any, Any]:
    return ItemResult(index, f"in-{index}", f"out-{index}" if output is None else output)


# -- commit on time as well as count -----------------------------------------------------------


def test_records_within_flush_interval_stay_buffered(tmp_path: Path) -> None:
    clock = FakeClock()
    ckpt = Checkpoint(tmp_path / "c.sqlite", chunk_size=500, flush_interval=1.0, clock=clock)
    ckpt.open()
    ckpt.record("0", done(0))
    clock.advance(0.9)
    ckpt.record("1", done(1))
    assert committed(ckpt.path) == 0
    ckpt.close()
    assert committed(ckpt.path) == 2


def test_a_record_after_flush_interval_commits_the_buffer(tmp_path: Path) -> None:
    clock = FakeClock()
    ckpt = Checkpoint(tmp_path / "c.sqlite", chunk_size=500, flush_interval=1.0, clock=clock)
    ckpt.open()
    ckpt.record("0", done(0))
    clock.advance(1.0)
    ckpt.record("1", done(1))
    assert committed(ckpt.path) == 2
    ckpt.record("2", done(2))  # the interval restarts with the next buffered row
    clock.advance(0.5)
    ckpt.record("3", done(3))
    assert committed(ckpt.path) == 2
    ckpt.close()


def test_a_full_chunk_commits_before_the_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    ckpt = Checkpoint(tmp_path / "c.sqlite", chunk_size=3, flush_interval=60.0, clock=clock)
    ckpt.open()
    for i in range(4):
        ckpt.record(str(i), done(i))
    assert committed(ckpt.path) == 3
    ckpt.close()


def test_flush_if_due_commits_an_idle_buffer_and_says_when_next(tmp_path: Path) -> None:
    clock = FakeClock()
    ckpt = Checkpoint(tmp_path / "c.sqlite", flush_interval=1.0, clock=clock)
    ckpt.open()
    assert ckpt.flush_if_due() is None  # nothing buffered: nothing to wait for
    ckpt.record("0", done(0))
    clock.advance(0.25)
    assert ckpt.flush_if_due() == pytest.approx(0.75)
    assert committed(ckpt.path) == 0
    clock.advance(0.75)
    assert ckpt.flush_if_due() is None
    assert committed(ckpt.path) == 1
    ckpt.close()


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, "1", True, None])
def test_flush_interval_must_be_positive_seconds(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="flush_interval"):
        Checkpoint(tmp_path / "c.sqlite", flush_interval=bad)


def test_an_infinite_flush_interval_commits_on_count_only(tmp_path: Path) -> None:
    clock = FakeClock()
    ckpt = Checkpoint(tmp_path / "c.sqlite", chunk_size=2, flush_interval=math.inf, clock=clock)
    ckpt.open()
    ckpt.record("0", done(0))
    clock.advance(1e9)
    assert ckpt.flush_if_due() is None
    assert committed(ckpt.path) == 0
    ckpt.record("1", done(1))
    assert committed(ckpt.path) == 2
    ckpt.close()


def test_a_clock_must_be_callable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="clock"):
        Checkpoint(tmp_path / "c.sqlite", clock=1.0)  # type: ignore[arg-type]


# -- a run killed with SIGKILL redoes only about one interval of work ------------------------------

SLOW_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from langchain_core.runnables import RunnableLambda
    from langchain_batchkit import Checkpoint, batchkit

    calls = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def work(x):
        os.write(calls, f"{x}\\n".encode())  # one write per call: survives the kill
        time.sleep(0.05)
        return f"out-{x}"

    ckpt = Checkpoint(sys.argv[1], chunk_size=500, flush_interval=0.2)
    kit = batchkit(RunnableLambda(work, name="work"), checkpoint=ckpt, max_concurrency=5,
                   retry=None, progress=False)
    kit.run(range(400))
    """
)


def _started(calls_file: Path) -> int:
    return calls_file.read_bytes().count(b"\n") if calls_file.exists() else 0


def test_a_killed_slow_run_redoes_at_most_in_flight_plus_one_interval(tmp_path: Path) -> None:
    path, calls_file = tmp_path / "run.sqlite", tmp_path / "calls.txt"
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_CHILD, str(path), str(calls_file)], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while committed(path) < 50:  # 500-item chunks: only the interval can commit these
            assert child.poll() is None, "the child ended before it was killed"
            assert time.monotonic() < deadline, "nothing was committed on time"
            time.sleep(0.02)
        while _started(calls_file) < 150:  # a point unrelated to when commits happen
            assert child.poll() is None, "the child ended before it was killed"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    first = [int(line) for line in calls_file.read_text().split()]
    assert len(first) == len(set(first)) < 400

    calls: list[int] = []

    def work(x: int) -> str:
        calls.append(x)
        return f"out-{x}"

    kit = batchkit(RunnableLambda(work, name="work"), checkpoint=path, progress=False)
    results = kit.batch(list(range(400)))

    assert [r.index for r in results] == list(range(400))  # every item exactly once
    assert results.outputs == [f"out-{i}" for i in range(400)]
    assert sorted(set(first) | set(calls)) == list(range(400))
    redone = set(first) & set(calls)
    # 5 in flight, plus what finished since the last commit: about one 0.2 s interval
    # (20 items at full speed); the rest is slack for a loaded machine.
    assert len(redone) <= 5 + 40, f"{len(redone)} items were run twice"
    assert Checkpoint(path).counts() == (400, 0)


# -- one bad row costs that row, not its chunk -----------------------------------------------------


def test_lone_surrogates_in_inputs_and_outputs_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    names = ["plain.jpg", "caf\udce9.jpg", "ok.png", "\ud800half.txt"]  # os.listdir on bytes
    kit: Any = batchkit(RunnableLambda(lambda s: s + "\udcff"), checkpoint=path, progress=False)
    assert not kit.batch(names).failed
    stored = list(Checkpoint(path).iter_results())
    assert [r.input for r in stored] == names
    assert [r.output for r in stored] == [n + "\udcff" for n in names]
    assert Checkpoint(path).to_jsonl(tmp_path / "out.jsonl") == 4  # valid UTF-8, exact
    exported = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["input"] for line in exported] == names


def test_lone_surrogate_keys_resume(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    names = ["caf\udce9.jpg", "café.jpg", "plain.jpg"]
    calls: list[str] = []

    def upper(s: str) -> str:
        calls.append(s)
        return s.upper()

    def kit() -> Any:
        return batchkit(RunnableLambda(upper), checkpoint=path, key=lambda s: s, progress=False)

    kit().batch(names[:2])
    results = kit().batch(names)
    assert calls == [*names[:2], "plain.jpg"]
    assert [r.key for r in results] == names
    assert sorted(r.key or "" for r in Checkpoint(path).iter_results()) == sorted(names)


def _refuse_inserts(path: Path, when: str) -> None:
    """Make SQLite refuse some rows, as a constraint or an odd value would."""
    ckpt = Checkpoint(path)
    ckpt.open()
    ckpt.close()
    with closing(sqlite3.connect(path)) as db:
        db.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON items WHEN {when} "
            "BEGIN SELECT RAISE(ABORT, 'row refused by test'); END"
        )
        db.commit()


def test_a_row_sqlite_refuses_becomes_its_items_error_row_and_the_rest_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "run.sqlite"
    _refuse_inserts(path, "NEW.key = '3' AND NEW.ok = 1")
    ckpt = Checkpoint(path, chunk_size=4)
    with caplog.at_level(logging.WARNING):
        kit: Any = batchkit(RunnableLambda(lambda x: x * 2), checkpoint=ckpt)
        results = kit.batch(range(10))
    assert results.outputs == [x * 2 for x in range(10)]  # the run itself is unharmed
    stored = {r.index: r for r in Checkpoint(path).iter_results()}
    assert sorted(stored) == list(range(10))  # later chunks committed too
    assert stored[3].error is not None and "row refused by test" in stored[3].error.message
    assert all(stored[i].ok for i in range(10) if i != 3)
    assert "'3'" in caplog.text and "row refused by test" in caplog.text


def test_a_row_that_cannot_be_written_at_all_is_skipped_with_its_key_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "run.sqlite"
    _refuse_inserts(path, "NEW.key = '3'")
    ckpt = Checkpoint(path, chunk_size=4)
    with caplog.at_level(logging.WARNING):
        kit: Any = batchkit(RunnableLambda(lambda x: x * 2), checkpoint=ckpt)
        kit.batch(range(10))
    assert sorted(r.index for r in Checkpoint(path).iter_results()) == [
        i for i in range(10) if i != 3
    ]
    assert "'3'" in caplog.text and "skipped" in caplog.text

    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP TRIGGER refuse")
        db.commit()
    calls: list[int] = []

    def double(x: int) -> int:
        calls.append(x)
        return x * 2

    resumed = batchkit(RunnableLambda(double), checkpoint=path)
    assert resumed.batch(range(10)).outputs == [x * 2 for x in range(10)]
    assert calls == [3]  # the skipped row is simply run again


def test_a_failed_commit_is_rolled_back_so_the_next_commit_works(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    _refuse_inserts(path, "NEW.key = '0'")
    ckpt = Checkpoint(path, chunk_size=1)
    ckpt.open()
    ckpt.record("0", done(0))
    ckpt.record("1", done(1))
    ckpt.record("2", done(2))
    ckpt.close()
    assert committed(path) == 2
