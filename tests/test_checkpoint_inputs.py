"""Which stored row belongs to which input: fingerprints, duplicate keys, odd values.

With index keys a resumed row must be for the same input (compared by a stable
fingerprint, so ordinary data is never refused); with ``key=`` each input needs
its own key; and nothing about a user's value or key function may abort a batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableLambda
from pydantic import BaseModel

from langchain_batchkit import Checkpoint, CheckpointError, ConfigurationError, batchkit
from langchain_batchkit._serialize import dumps_value, fingerprint_value
from tests.conftest import Probe

ROOT = Path(__file__).parent.parent


class Caption(BaseModel):
    text: str
    score: float


def _pandas_rows(shift: float = 0.0) -> list[Any]:
    import pandas as pd

    frame = pd.DataFrame(
        {"a": [1.0, None, 3.0, 4.0, 5.0], "b": ["x", "y", None, "w", "v"]},
        index=[10, 11, 12, 13, 14],
    )
    frame.loc[11, "b"] = "y" if not shift else "changed"
    return [row for _, row in frame.iterrows()]


def _dates(day: int = 2) -> list[Any]:
    return [date(2024, 1, 1), date(2024, 1, day), date(2024, 1, 3), date(2024, 1, 4),
            datetime(2024, 1, 5, 12, tzinfo=UTC)]  # fmt: skip


# Each kind: a factory of equal inputs (fresh objects per call), and one that differs
# at index 1 (an item the crashed run finished).
KINDS: dict[str, tuple[Callable[[], list[Any]], Callable[[], list[Any]]]] = {
    "nan": (
        lambda: [1.0, math.nan, 2.0, math.nan, 3.0],
        lambda: [1.0, 7.0, 2.0, math.nan, 3.0],
    ),
    "pandas rows with missing values": (_pandas_rows, lambda: _pandas_rows(1.0)),
    "dates and datetimes": (_dates, lambda: _dates(9)),
    "decimals": (
        lambda: [Decimal("1.10"), Decimal("NaN"), Decimal("3"), Decimal("4"), Decimal("5")],
        lambda: [Decimal("1.10"), Decimal("2"), Decimal("3"), Decimal("4"), Decimal("5")],
    ),
    "uuids": (
        lambda: [uuid.UUID(int=i) for i in range(5)],
        lambda: [uuid.UUID(int=i * 7) for i in range(5)],
    ),
    "sets": (
        lambda: [{"a", "b"}, frozenset({"c", "d", "e"}), {1, 2}, set(), {"z"}],
        lambda: [{"a", "b"}, frozenset({"c", "d"}), {1, 2}, set(), {"z"}],
    ),
    "dicts with int keys": (
        lambda: [{1: "a", 2: "b"}, {3: "c"}, {(1, 2): "t"}, {}, {None: 0}],
        lambda: [{1: "a", 2: "b"}, {4: "c"}, {(1, 2): "t"}, {}, {None: 0}],
    ),
    "tuples": (
        lambda: [("a", 1), ("b", 2.5), (), ("c", None), (1, (2, 3))],
        lambda: [("a", 1), ("b", 2.6), (), ("c", None), (1, (2, 3))],
    ),
    "bytes": (
        lambda: [b"\x00\xff", b"\x89PNG", b"", b"x", bytearray(b"y")],
        lambda: [b"\x00\xff", b"\x89JPG", b"", b"x", bytearray(b"y")],
    ),
    "pydantic models": (
        lambda: [Caption(text=t, score=0.5) for t in "abcde"],
        lambda: [Caption(text=t, score=0.6 if t == "b" else 0.5) for t in "abcde"],
    ),
    "langchain messages": (
        lambda: [[HumanMessage(t)] for t in "abcde"],
        lambda: [[HumanMessage(t.upper() if t == "b" else t)] for t in "abcde"],
    ),
}


def _crash_after(n: int, calls: list[Any]) -> RunnableLambda[Any, Any]:
    """A chain interrupted (Ctrl-C) as it starts its (n+1)-th call, when n is given."""

    def work(x: Any) -> str:
        if len(calls) == n:
            raise KeyboardInterrupt
        calls.append(x)
        return f"done-{len(calls)}"

    return RunnableLambda(work, name="work")


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_crashed_run_over_ordinary_data_resumes_without_a_false_refusal(
    tmp_path: Path, kind: str
) -> None:
    same, _ = KINDS[kind]
    path = tmp_path / "run.sqlite"
    first: list[Any] = []
    with pytest.raises(KeyboardInterrupt):
        batchkit(_crash_after(3, first), checkpoint=path, max_concurrency=1).batch(same())
    assert Checkpoint(path).counts() == (3, 0)

    again: list[Any] = []
    results = batchkit(_crash_after(-1, again), checkpoint=path, max_concurrency=1).batch(same())
    assert len(again) == 2  # only the two the crash left
    assert [r.index for r in results] == list(range(5))
    assert results.outputs == ["done-1", "done-2", "done-3", "done-1", "done-2"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_genuinely_different_input_list_is_still_refused(tmp_path: Path, kind: str) -> None:
    same, different = KINDS[kind]
    path = tmp_path / "run.sqlite"
    with pytest.raises(KeyboardInterrupt):
        batchkit(_crash_after(3, []), checkpoint=path, max_concurrency=1).batch(same())
    kit = batchkit(_crash_after(-1, []), checkpoint=path, max_concurrency=1)
    with pytest.raises(CheckpointError, match="different input at index 1"):
        kit.batch(different())


def test_resumed_items_hand_back_the_given_input_not_a_stored_repr(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    kit: Any = batchkit(RunnableLambda(lambda d: str(d)), checkpoint=path)
    kit.batch([date(2024, 1, 1)])
    resumed = kit.batch([date(2024, 1, 1)])
    assert resumed[0].input == date(2024, 1, 1)


def test_fingerprints_ignore_set_and_dict_order() -> None:
    assert list({8, 16}) != list({16, 8})  # equal sets, iterated in another order
    assert fingerprint_value({8, 16}) == fingerprint_value({16, 8})
    assert fingerprint_value({"k": 1, "j": 2}) == fingerprint_value({"j": 2, "k": 1})


def test_fingerprints_do_not_depend_on_the_hash_seed() -> None:
    value = [{"alpha", "beta", "gamma", "delta", "eps"}, {"k": 1, "j": frozenset("xyz")}]
    script = (
        f"from langchain_batchkit._serialize import fingerprint_value as f; print(f({value!r}))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert other == fingerprint_value(value)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (1, 1.0),
        (1, True),
        ("1", 1),
        ((1, 2), [1, 2]),
        (b"x", "x"),
        ({"a": 1}, {"a": 2}),
        (math.nan, None),
        (Decimal("1"), 1),
        (date(2024, 1, 1), "2024-01-01"),
        (["a", "b"], ["ab"]),
        ({1: "a"}, {"1": "a"}),
        (HumanMessage("hi"), AIMessage("hi")),
    ],
)
def test_different_values_have_different_fingerprints(one: Any, other: Any) -> None:
    assert fingerprint_value(one) != fingerprint_value(other)


def test_equal_values_built_apart_have_one_fingerprint() -> None:
    import numpy as np

    for make in (
        lambda: [math.nan, {"a": [1, None]}, "caf\udce9", b"\xff"],
        lambda: _pandas_rows(),
        lambda: np.array([[1.0, math.nan], [2.0, 3.0]]),
        lambda: [np.int64(3), np.float64("nan")],
        lambda: Caption(text="x", score=math.nan),
        lambda: Point(1, 2),
        lambda: Plain(3),
    ):
        assert fingerprint_value(make()) == fingerprint_value(make())


@dataclass
class Point:
    x: int
    y: int


class Plain:
    def __init__(self, n: int) -> None:
        self.n = n


# -- an older checkpoint file --------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (key TEXT PRIMARY KEY, idx INTEGER NOT NULL, ok INTEGER NOT NULL,
    input TEXT, output TEXT, error TEXT, attempts INTEGER NOT NULL, latency REAL NOT NULL,
    usage TEXT, history TEXT, written_at REAL NOT NULL);
CREATE INDEX items_idx ON items (idx);
"""


def _v1_file(path: Path, inputs: list[Any]) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.executescript(V1_SCHEMA)
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema_version", "1"), ("fingerprint", ""), ("created_at", "0")],
        )
        db.executemany(
            "INSERT INTO items VALUES (?, ?, 1, ?, ?, NULL, 1, 0.0, NULL, NULL, 0.0)",
            [(str(i), i, dumps_value(x), dumps_value(f"old-{i}")) for i, x in enumerate(inputs)],
        )
        db.commit()


def test_a_layout_1_file_is_migrated_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    _v1_file(path, [1.0, math.nan, date(2024, 1, 1)])
    calls: list[Any] = []
    kit = batchkit(_crash_after(-1, calls), checkpoint=path)
    results = kit.batch([1.0, math.nan, date(2024, 1, 1), "new"])
    assert calls == ["new"]
    assert results.outputs == ["old-0", "old-1", "old-2", "done-1"]
    with closing(sqlite3.connect(path)) as db:
        version = db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
    assert version == ("3",)


def test_a_layout_1_file_still_refuses_another_input_list(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    _v1_file(path, ["apple", "banana"])
    with pytest.raises(CheckpointError, match="different input at index 0"):
        batchkit(_crash_after(-1, []), checkpoint=path).batch(["cherry", "banana"])


# -- duplicate keys ------------------------------------------------------------------------------


def _by_id(row: dict[str, Any]) -> str:
    return str(row["id"])


def _rows(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "n": n} for n, i in enumerate(ids)]


def test_duplicate_keys_in_one_read_are_refused_naming_both_inputs(tmp_path: Path) -> None:
    kit = batchkit(RunnableLambda(lambda r: r["n"]), checkpoint=tmp_path / "c.sqlite", key=_by_id)
    with pytest.raises(ConfigurationError, match=r"inputs #1 and #3 .*'b'"):
        kit.batch(_rows("a", "b", "c", "b"))


def test_a_duplicate_of_an_item_committed_earlier_in_the_run_is_refused(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path / "c.sqlite", chunk_size=2)  # reads two inputs at a time
    kit = batchkit(RunnableLambda(lambda r: r["n"]), checkpoint=ckpt, key=_by_id, max_concurrency=1)
    with pytest.raises(ConfigurationError, match=r"inputs #0 and #4 .*'a'"):
        kit.batch(_rows("a", "b", "c", "d", "a"))


async def test_a_duplicate_of_an_item_still_in_flight_is_refused(
    tmp_path: Path, probe: Probe
) -> None:
    ckpt = Checkpoint(tmp_path / "c.sqlite", chunk_size=1)
    kit = batchkit(probe.runnable(held=True), checkpoint=ckpt, key=str, max_concurrency=4)
    with pytest.raises(ConfigurationError, match=r"inputs #0 and #2 .*'x'"):
        await asyncio.wait_for(kit.abatch(["x", "y", "x"]), 5)


def test_a_key_from_an_earlier_run_is_a_resume_but_twice_in_one_run_is_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite"
    calls: list[str] = []

    def kit() -> Any:
        def work(r: dict[str, Any]) -> int:
            calls.append(r["id"])
            return int(r["n"])

        return batchkit(RunnableLambda(work), checkpoint=path, key=_by_id)

    kit().batch(_rows("a", "b"))
    assert kit().batch(_rows("b", "a", "c")).outputs == [1, 0, 2]
    assert calls == ["a", "b", "c"]
    with pytest.raises(ConfigurationError, match=r"inputs #0 and #2 .*'a'"):
        kit().batch(_rows("a", "c", "a"))


def test_duplicate_detection_holds_only_the_keys_in_flight(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path / "c.sqlite", chunk_size=50)
    high = [0]

    def work(x: int) -> int:
        high[0] = max(high[0], len(ckpt._staged))
        return x

    kit = batchkit(RunnableLambda(work), checkpoint=ckpt, key=str, max_concurrency=4)
    report = kit.run(range(3000))
    assert report.summary.succeeded == 3000
    assert 0 < high[0] <= 50 + 3 * 4  # a read-ahead and the window, not every key


def test_a_key_function_that_raises_fails_only_that_item(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"

    def key(x: int) -> str:
        if x == 3:
            raise LookupError("row has no id")
        return f"k{x}"

    kit: Any = batchkit(RunnableLambda(lambda x: x * 10), checkpoint=path, key=key)
    results = kit.batch(range(6))
    assert [r.output for r in results if r.ok] == [0, 10, 20, 40, 50]
    error = results[3].error
    assert error is not None and error.type == "LookupError"
    assert "#3" in error.message and "row has no id" in error.message
    assert sorted(r.key or "" for r in Checkpoint(path).iter_results()) == [
        "k0", "k1", "k2", "k4", "k5",
    ]  # fmt: skip


# -- values whose repr raises -------------------------------------------------------------------


class Hostile:
    """A value that cannot be serialised, nor even printed."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_an_output_whose_repr_raises_is_stored_as_a_placeholder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "run.sqlite"
    with caplog.at_level(logging.WARNING):
        kit: Any = batchkit(RunnableLambda(lambda x: Hostile()), checkpoint=path)
        results = kit.batch([1, 2])
    assert not results.failed
    stored = [r.output for r in Checkpoint(path).iter_results()]
    assert stored == ["<Hostile: repr() raised RuntimeError>"] * 2
    assert "Hostile" in caplog.text


def test_an_input_whose_repr_raises_is_stored_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    inputs = [Hostile(), Hostile()]
    batchkit(_crash_after(-1, []), checkpoint=path, max_concurrency=1).batch(inputs)
    calls: list[Any] = []
    again = batchkit(_crash_after(-1, calls), checkpoint=path).batch(inputs)
    assert calls == [] and again.outputs == ["done-1", "done-2"]
    assert json.loads(dumps_value(Hostile())) == {"repr": "<Hostile: repr() raised RuntimeError>"}


def test_refusing_an_input_whose_repr_raises_still_names_the_index(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    kit: Any = batchkit(RunnableLambda(lambda x: "ok"), checkpoint=path)
    kit.batch([1, 2])
    with pytest.raises(CheckpointError, match="different input at index 0"):
        kit.batch([Hostile(), 2])
