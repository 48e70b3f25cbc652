"""ItemResult / BatchResult: views, errors, summaries, exports and reprs."""

from __future__ import annotations

import builtins
import copy
import json
import pickle
import threading
import traceback
from typing import Any

import pytest

from langchain_batchkit import (
    Attempt,
    BatchFailedError,
    BatchResult,
    ItemError,
    ItemResult,
    TokenUsage,
)
from langchain_batchkit._errors import RedactedError, redact_secrets


def _error(msg: str = "boom") -> ItemError:
    try:
        raise ValueError(msg)
    except ValueError as exc:
        return ItemError.from_exception(exc)


def _results() -> BatchResult[str, str]:
    return BatchResult(
        [
            ItemResult(2, "c", None, _error("bad c"), 2, 0.2),
            ItemResult(0, "a", "A", None, 1, 0.1, TokenUsage(3, 4, 7)),
            ItemResult(1, "b", "B", None, 1, 0.1, TokenUsage(1, 1, 2)),
        ],
        wall_time=2.0,
    )


def test_batch_result_is_a_list_sorted_by_index() -> None:
    results = _results()
    assert isinstance(results, list)
    assert [r.index for r in results] == [0, 1, 2]
    assert results.outputs == ["A", "B", None]


def test_succeeded_and_failed_views() -> None:
    results = _results()
    assert [r.index for r in results.succeeded] == [0, 1]
    assert [r.index for r in results.failed] == [2]
    assert results[2].ok is False and results[0].ok is True


def test_item_error_keeps_type_message_traceback_and_live_exception() -> None:
    err = _error("bad thing")
    assert (err.type, err.message, err.module) == ("ValueError", "bad thing", "builtins")
    assert "raise ValueError(msg)" in err.traceback
    assert isinstance(err.exception, ValueError)
    assert str(err) == "ValueError: bad thing"


def test_item_error_pickles_as_text() -> None:
    err = _error()
    again = pickle.loads(pickle.dumps(err))
    assert again == err


def test_a_pickled_item_error_drops_the_live_exception() -> None:
    err = _error("bad thing")
    assert err.exception is not None

    again = pickle.loads(pickle.dumps(err))

    assert again.exception is None
    assert (again.type, again.message, again.traceback, again.module) == (
        err.type,
        err.message,
        err.traceback,
        err.module,
    )


# Fake keys, built at run time so no key-shaped literal sits in the repository.
PROJECT_KEY = "sk-" + "proj-" + "abcdefghijklmnop" + "1234"
PLAIN_KEY = "sk-" + "abcdefghijklmnop" + "1234567890"
GOOGLE_KEY = "AIza" + "Syabcdefghijklmnop" + "0123456789"


@pytest.mark.parametrize(
    "text",
    [
        f"Incorrect API key provided: {PROJECT_KEY}",
        "headers: Authorization: Bearer abcdefghijklmnop",
        "config api_key='secret-value-123456'",
        f"GET https://g/v1/models:generate?key={GOOGLE_KEY} failed",
        "aws_secret_access_key=abcdefghijklmnop",
        "login with token=hf_abcdefghijklmnop",
    ],
)
def test_api_keys_never_reach_error_text(text: str) -> None:
    try:
        raise PermissionError(text)
    except PermissionError as exc:
        err = ItemError.from_exception(exc)
    for secret in (PROJECT_KEY, "abcdefghijklmnop", "secret-value-123456", GOOGLE_KEY):
        assert secret not in err.message
        assert secret not in err.traceback
        assert secret not in repr(err)
    assert "***" in err.message


def test_redact_leaves_ordinary_text_alone() -> None:
    assert redact_secrets("a task-like word and sk-8 stay") == "a task-like word and sk-8 stay"


def test_raise_for_errors_lists_every_failed_index_and_cause() -> None:
    results = _results()
    with pytest.raises(BatchFailedError) as info:
        results.raise_for_errors()
    assert "1 of 3 items failed" in str(info.value)
    assert "[2] ValueError: bad c" in str(info.value)
    assert info.value.failed[0].index == 2
    cause = info.value.__cause__
    assert (type(cause).__name__, str(cause)) == ("ValueError", "bad c")


def test_raise_for_errors_chains_a_redacted_stand_in_not_the_live_exception() -> None:
    results = _results()
    with pytest.raises(BatchFailedError) as info:
        results.raise_for_errors()

    cause = info.value.__cause__
    assert isinstance(cause, RedactedError)
    assert cause is not results[2].error.exception  # type: ignore[union-attr]
    printed = "".join(traceback.format_exception(info.value))
    assert "\nValueError: bad c\n" in printed  # read as the original error's line
    assert "raise ValueError(msg)" in printed  # the note carries the item's own traceback


def test_raise_for_errors_names_the_cause_of_results_without_live_exceptions() -> None:
    loaded = pickle.loads(pickle.dumps(_results()))  # as from a pickle or a checkpoint
    with pytest.raises(BatchFailedError) as info:
        loaded.raise_for_errors()

    assert (type(info.value.__cause__).__name__, str(info.value.__cause__)) == (
        "ValueError",
        "bad c",
    )


def test_batch_failed_error_and_its_cause_pickle() -> None:
    with pytest.raises(BatchFailedError) as info:
        _results().raise_for_errors()
    cause = info.value.__cause__
    assert cause is not None

    again = pickle.loads(pickle.dumps(info.value))
    cause_again = pickle.loads(pickle.dumps(cause))

    assert (str(again), again.failed, again.total) == (str(info.value), info.value.failed, 3)
    assert (type(cause_again).__name__, str(cause_again)) == ("ValueError", "bad c")
    assert isinstance(cause_again, RedactedError)


def test_raise_for_errors_returns_self_when_all_ok() -> None:
    ok = BatchResult([ItemResult(0, "a", "A")])
    assert ok.raise_for_errors() is ok


def test_raise_for_errors_truncates_long_lists() -> None:
    many: BatchResult[int, int] = BatchResult(
        [ItemResult(i, i, None, _error(f"e{i}")) for i in range(30)]
    )
    with pytest.raises(BatchFailedError, match="and 10 more"):
        many.raise_for_errors()


def test_summary_counts_time_throughput_and_tokens() -> None:
    s = _results().summary()
    assert (s.total, s.succeeded, s.failed) == (3, 2, 1)
    assert s.wall_time == 2.0 and s.items_per_second == 1.5
    assert s.attempts == 4
    assert s.usage == TokenUsage(4, 5, 9)
    assert "3 items: 2 ok, 1 failed" in str(s)


def test_to_records_is_flat() -> None:
    records = _results().to_records()
    assert records[0] == {
        "index": 0,
        "ok": True,
        "status": "ok",
        "input": "a",
        "output": "A",
        "error_type": None,
        "error_message": None,
        "attempts": 1,
        "latency_s": 0.1,
        "input_tokens": 3,
        "output_tokens": 4,
        "total_tokens": 7,
        "cost_usd": None,
    }
    assert records[2]["error_type"] == "ValueError"


def test_to_records_gives_the_item_cost_in_dollars() -> None:
    priced: ItemResult[str, str] = ItemResult(0, "a", "A", cost=0.0125)
    assert priced.to_record()["cost_usd"] == 0.0125


def test_to_pandas_has_one_row_per_item() -> None:
    frame = _results().to_pandas()
    assert list(frame["index"]) == [0, 1, 2]
    assert list(frame["ok"]) == [True, True, False]


def test_to_pandas_without_pandas_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pandas(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pandas":
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match=r"langchain-batchkit\[pandas\]"):
        _results().to_pandas()


def test_repr_is_compact() -> None:
    assert repr(_results()) == "BatchResult(3 items, 2 ok, 1 failed, 2.00 s)"


def test_repr_html_shows_counts_and_escaped_failed_rows() -> None:
    results: BatchResult[str, str] = BatchResult(
        [ItemResult(0, "<img>", None, _error("<script>x</script>"))]
    )
    page = results._repr_html_()
    assert "1 failed" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;img&gt;" in page


def test_by_index_finds_items_in_partial_results() -> None:
    partial = BatchResult([ItemResult(5, "f", "F"), ItemResult(9, "j", "J")], complete=False)
    assert partial.by_index(9).output == "J"
    with pytest.raises(KeyError, match="index 3"):
        partial.by_index(3)
    assert "partial" in repr(partial)


def test_retry_failed_needs_a_runner() -> None:
    with pytest.raises(RuntimeError, match="not made by a batchkit runner"):
        _results().retry_failed()


class _Kit:
    """A stand-in for the kit behind a BatchResult: it cannot be pickled (a client)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def _rerun(self, pairs: Any, config: Any) -> BatchResult[str, str]:
        return BatchResult([ItemResult(i, x, x.upper()) for i, x in pairs])

    async def _arerun(self, pairs: Any, config: Any) -> BatchResult[str, str]:
        return self._rerun(pairs, config)


def _made_by_a_kit() -> BatchResult[str, str]:
    return BatchResult(
        _results(), wall_time=2.0, complete=False, rerunner=_Kit(), config={"tags": ["t"]}
    )


def test_a_pickle_keeps_the_results_but_not_the_kit() -> None:
    results = _made_by_a_kit()

    loaded = pickle.loads(pickle.dumps(results))

    assert list(loaded) == list(results)
    assert (loaded.wall_time, loaded.complete) == (2.0, False)
    with pytest.raises(RuntimeError, match="unpickled"):
        loaded.retry_failed()


def test_a_copy_keeps_the_kit_and_can_retry() -> None:
    results = _made_by_a_kit()

    copied = copy.copy(results)

    assert list(copied) == list(results) and copied is not results
    assert copied.retry_failed().outputs == ["A", "B", "C"]


# -- attempt records -------------------------------------------------------------------------


def test_an_attempt_round_trips_through_its_dict_with_output_usage_cost_and_latency() -> None:
    attempt = Attempt(
        _error("rejected"),
        output=("raw", b"\x00", {"n": 1}),
        usage=TokenUsage(5, 7, 12),
        cost=0.0003,
        latency=1.25,
    )

    back = Attempt.from_dict(json.loads(json.dumps(attempt.to_dict())))

    assert back == attempt
    assert back.error is not None and back.error.exception is None  # text only


def test_an_attempt_whose_output_cannot_be_loaded_keeps_its_text_when_lenient() -> None:
    data = Attempt(None, output="x").to_dict()
    data["output"] = {"pydantic": "no_such_module:Gone", "data": {}}

    with pytest.raises(ImportError):
        Attempt.from_dict(data)
    assert "no_such_module" in Attempt.from_dict(data, lenient=True).output


def test_an_attempt_prints_on_one_line_without_secrets() -> None:
    attempt = Attempt(ItemError("AuthenticationError", f"bad key {PLAIN_KEY}\n"))
    assert "\n" not in repr(attempt) and PLAIN_KEY[:19] not in repr(attempt)


class _Retrier:
    """Re-runs each failed item once more, failing again with a new error of its own."""

    def _rerun(self, pairs: Any, config: Any) -> BatchResult[str, str]:
        return BatchResult(
            [
                ItemResult(
                    i, x, None, _error(f"third {x}"), 2, 0.5, history=(Attempt(_error("2nd")),)
                )
                for i, x in pairs
            ]
        )

    async def _arerun(self, pairs: Any, config: Any) -> BatchResult[str, str]:
        return self._rerun(pairs, config)


def test_retry_failed_keeps_every_attempt_in_order_oldest_first() -> None:
    first_try = Attempt(_error("first"), latency=0.1)
    results: BatchResult[str, str] = BatchResult(
        [
            ItemResult(0, "a", None, _error("second a"), 2, 0.4, history=(first_try,)),
            ItemResult(1, "b", None, _error("only b"), 1, 0.3, TokenUsage(1, 1, 2), cost=0.01),
        ],
        rerunner=_Retrier(),
    )

    again = results.retry_failed()

    messages = [[a.error and a.error.message for a in r.history] for r in again]
    assert messages == [["first", "second a", "2nd"], ["only b", "2nd"]]
    assert [r.attempts for r in again] == [4, 3]
    assert again[0].history[0] is first_try
    # a single-attempt result is that attempt: its usage, cost and latency carry over
    assert again[1].history[0] == Attempt(results[1].error, None, TokenUsage(1, 1, 2), 0.01, 0.3)
    # after retries, the run's totals are not the last attempt's own: only its error is kept
    assert again[0].history[1] == Attempt(results[0].error)
