"""The Batch API state file: earlier submissions kept as Attempt records, older formats."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from langchain_batchkit import Attempt, ItemError
from langchain_batchkit._batch_api import BatchStateError
from langchain_batchkit._batch_api._state import ItemState
from langchain_batchkit._batch_api._store import SCHEMA_VERSION, JobStore


def _store_with_one_resubmitted_item(path: Path) -> None:
    store = JobStore(path)
    try:
        store.begin(n_items=1)
        item = ItemState(0, "digest-0")
        item.submit("job-0001")
        item.fail(TimeoutError("expired"), max_resubmits=2, now=0.0)
        item.submit("job-0002")
        store.save(items=[item])
    finally:
        store.close()


def _load(path: Path) -> dict[int, ItemState]:
    store = JobStore(path)
    try:
        store.begin(n_items=1)
        return store.load_items()
    finally:
        store.close()


def test_a_resubmission_keeps_the_earlier_submission_as_an_attempt(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    _store_with_one_resubmitted_item(path)

    [attempt] = _load(path)[0].history

    assert attempt.error is not None and str(attempt.error) == "TimeoutError: expired"
    assert (attempt.output, attempt.usage, attempt.cost, attempt.latency) == (None, None, None, 0.0)


#: The tables of formats 1 and 2 (one round; format 1 kept history as a list of errors).
_FORMAT_2_TABLES = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (key TEXT PRIMARY KEY, batch_id TEXT, input_file_id TEXT,
    status TEXT NOT NULL, collected INTEGER NOT NULL);
CREATE TABLE members (job TEXT NOT NULL, custom_id TEXT NOT NULL, idx INTEGER NOT NULL,
    line INTEGER NOT NULL, PRIMARY KEY (job, custom_id));
CREATE TABLE items (idx INTEGER PRIMARY KEY, digest TEXT NOT NULL, status TEXT NOT NULL,
    submissions INTEGER NOT NULL, job TEXT, response TEXT, error TEXT,
    retryable INTEGER NOT NULL, history TEXT NOT NULL);
"""


def _old_file(path: Path, version: str, history: str) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.executescript(_FORMAT_2_TABLES)
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("version", version), ("run_id", "run-old"), ("items", "1")],
        )
        db.execute("INSERT INTO jobs VALUES ('job-00002', 'batch_2', 'file_2', 'in_progress', 0)")
        db.execute("INSERT INTO members VALUES ('job-00002', '0-2', 0, 0)")
        db.execute(
            "INSERT INTO items VALUES (0, 'digest-0', 'submitted', 2, 'job-00002', NULL, NULL, "
            "0, ?)",
            (history,),
        )
        db.commit()


def _version(path: Path) -> tuple[str] | None:
    with closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
    return None if row is None else (str(row[0]),)


def test_a_format_1_file_is_migrated_its_errors_becoming_attempts(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    old_history = json.dumps([{"type": "TimeoutError", "message": "expired", "module": ""}])
    _old_file(path, "1", old_history)

    [attempt] = _load(path)[0].history

    assert attempt == Attempt(ItemError("TimeoutError", "expired"))
    assert _version(path) == (SCHEMA_VERSION,)


def test_a_format_2_file_is_migrated_its_jobs_and_items_becoming_round_0(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    _old_file(path, "2", "[]")

    item = _load(path)[0]
    store = JobStore(path)
    try:
        [job] = store.load_jobs(0)
    finally:
        store.close()

    assert (item.round, item.status, item.submissions, item.job) == (0, "submitted", 2, "job-00002")
    assert (job.key, job.batch_id, job.round, job.members) == (
        "job-00002",
        "batch_2",
        0,
        {"0-2": 0},
    )
    assert _version(path) == (SCHEMA_VERSION,)


def test_a_file_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    _store_with_one_resubmitted_item(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value = '99' WHERE name = 'version'")
        db.commit()

    with pytest.raises(BatchStateError, match=r"format '99'.*another release"):
        _load(path)
