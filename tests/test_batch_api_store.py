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


def test_a_format_1_file_is_migrated_its_errors_becoming_attempts(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    _store_with_one_resubmitted_item(path)
    old_history = json.dumps([{"type": "TimeoutError", "message": "expired", "module": ""}])
    with closing(sqlite3.connect(path)) as db:  # what format 1 wrote
        db.execute("UPDATE items SET history = ?", (old_history,))
        db.execute("UPDATE meta SET value = '1' WHERE name = 'version'")
        db.commit()

    [attempt] = _load(path)[0].history

    assert attempt == Attempt(ItemError("TimeoutError", "expired"))
    with closing(sqlite3.connect(path)) as db:
        version = db.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
    assert version == (SCHEMA_VERSION,)


def test_a_file_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    _store_with_one_resubmitted_item(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value = '99' WHERE name = 'version'")
        db.commit()

    with pytest.raises(BatchStateError, match=r"format '99'.*another release"):
        _load(path)
