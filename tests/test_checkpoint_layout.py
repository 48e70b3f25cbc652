"""The checkpoint's layout 3: attempt records and cost stored, older layouts migrated.

A layout 2 file (history as a list of error dicts, no cost column) opens in a run,
is migrated in place and resumes; read without a run, it is read as it is; a
layout this release does not know is refused with a message saying so.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from langchain_batchkit import (
    Attempt,
    Checkpoint,
    CheckpointError,
    ItemError,
    ItemResult,
    TokenUsage,
    batchkit,
)
from langchain_batchkit._serialize import dumps_value, fingerprint_value


def _stored(path: Path) -> dict[int, ItemResult[Any, Any]]:
    return {r.index: r for r in Checkpoint(path).iter_results()}


def _version(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return str(db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()[0])


def test_attempts_and_cost_round_trip_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    history = (
        Attempt(ItemError("RateLimitError", "slow down"), latency=0.5),
        Attempt(None, output={"answer": 41}, usage=TokenUsage(3, 4, 7), cost=0.002, latency=1.5),
    )
    result: ItemResult[str, Any] = ItemResult(
        0, "q", {"answer": 42}, attempts=3, latency=4.0, history=history, cost=0.003
    )
    checkpoint = Checkpoint(path)
    checkpoint.open("job")
    checkpoint.record("0", result)
    checkpoint.close()

    back = _stored(path)[0]

    assert back == ItemResult(
        0, "q", {"answer": 42}, attempts=3, latency=4.0, history=history, key="0", cost=0.003
    )
    assert _version(path) == "3"


def test_a_resumed_item_comes_back_with_the_attempts_of_its_first_run(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    calls: list[str] = []

    def flaky(x: str) -> str:
        calls.append(x)
        if calls.count(x) == 1:
            raise TimeoutError(f"first try of {x}")
        return x.upper()

    kit = batchkit(RunnableLambda(flaky), checkpoint=path, progress=False)
    first = kit.batch(["a", "b"])

    again = batchkit(RunnableLambda(flaky), checkpoint=path, progress=False).batch(["a", "b"])

    assert sorted(calls) == ["a", "a", "b", "b"]  # the second run called nothing
    assert [r.history for r in again] == [r.history for r in first]
    assert [[a.error and a.error.message for a in r.history] for r in again] == [
        ["first try of a"],
        ["first try of b"],
    ]


# -- a file an earlier release wrote ---------------------------------------------------------

V2_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (key TEXT PRIMARY KEY, idx INTEGER NOT NULL, ok INTEGER NOT NULL,
    input TEXT, output TEXT, error TEXT, attempts INTEGER NOT NULL, latency REAL NOT NULL,
    usage TEXT, history TEXT, written_at REAL NOT NULL, input_fp TEXT, run INTEGER);
CREATE INDEX items_idx ON items (idx);
"""

OLD_ERROR = {"type": "TimeoutError", "message": "late", "traceback": "", "module": "builtins"}


def _v2_file(path: Path) -> None:
    """What layout 2 wrote for: #0 ok after one retry, #1 failed twice; #2 never ran."""
    rows = [
        ("0", 0, 1, dumps_value("a"), dumps_value("A"), None, 2, 1.0, "[1, 2, 3]",
         json.dumps([OLD_ERROR]), 0.0, fingerprint_value("a"), 1),
        ("1", 1, 0, dumps_value("b"), None, json.dumps(OLD_ERROR), 2, 2.0, None,
         json.dumps([OLD_ERROR]), 0.0, fingerprint_value("b"), 1),
    ]  # fmt: skip
    with closing(sqlite3.connect(path)) as db:
        db.executescript(V2_SCHEMA)
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema_version", "2"), ("fingerprint", ""), ("created_at", "0"), ("runs", "1")],
        )
        db.executemany(f"INSERT INTO items VALUES ({', '.join('?' * 13)})", rows)
        db.commit()


def test_a_layout_2_file_is_migrated_and_resumes_with_its_errors_as_attempts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.sqlite"
    _v2_file(path)
    calls: list[str] = []

    def upper(x: str) -> str:
        calls.append(x)
        return x.upper()

    results = batchkit(RunnableLambda(upper), checkpoint=path, progress=False).batch(
        ["a", "b", "c"]
    )

    assert calls == ["c"]
    assert results.outputs == ["A", None, "C"]
    late = Attempt(ItemError.from_dict(OLD_ERROR))
    assert [r.history for r in results] == [(late,), (late,), ()]
    assert results[1].error == ItemError.from_dict(OLD_ERROR)
    assert results[0].usage == TokenUsage(1, 2, 3) and results[0].cost is None
    assert _version(path) == "3"
    assert _stored(path)[1].history == (late,)


def test_a_layout_2_file_is_read_as_it_is_without_a_run(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    _v2_file(path)

    stored = _stored(path)

    assert stored[0].history == (Attempt(ItemError.from_dict(OLD_ERROR)),)
    assert stored[0].to_record()["cost_usd"] is None
    assert _version(path) == "2"  # a reader never writes


def test_a_failed_item_of_a_layout_2_file_is_run_again_on_request(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    _v2_file(path)

    kit = batchkit(RunnableLambda(str.upper), checkpoint=path, retry_failed=True, progress=False)
    results = kit.batch(["a", "b"])

    assert results.outputs == ["A", "B"]


def _newer_file(path: Path) -> None:
    batchkit(RunnableLambda(str.upper), checkpoint=path, progress=False).batch(["a"])
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value = '4' WHERE name = 'schema_version'")
        db.commit()


def test_a_run_refuses_a_file_of_a_newer_layout(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    _newer_file(path)
    kit = batchkit(RunnableLambda(str.upper), checkpoint=path, progress=False)

    with pytest.raises(CheckpointError, match=r"layout version 4, written by a newer"):
        kit.batch(["a"])


def test_a_reader_refuses_a_file_of_a_newer_layout(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    _newer_file(path)

    with pytest.raises(CheckpointError, match=r"layout version 4, written by a newer"):
        list(Checkpoint(path).iter_results())
