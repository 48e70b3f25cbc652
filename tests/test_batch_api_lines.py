"""Result lines with no HTTP answer (``response: null`` and an ``error``): decided by code."""

from __future__ import annotations

from typing import Any

import pytest

from langchain_batchkit import BatchAPIRunner
from langchain_batchkit._batch_api import BatchJobUnfinishedError, BatchRequestError
from langchain_batchkit._batch_api._errors import is_resubmittable, unfinished_error
from langchain_batchkit._batch_api._responses import parse_lines
from langchain_batchkit.testing import FakeClock
from tests.batch_support import llm_for, options_on, prompts


async def test_server_error_lines_without_an_answer_are_resubmitted(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(batch_line_error_rate=0.4, batch_line_error_style="line", seed=3)
    batch = BatchAPIRunner(llm_for(server), options=options_on(batch_clock, max_resubmits=6))

    results = await batch.arun(prompts(12))

    assert all(r.ok for r in results), results.failed
    retried = [r for r in results if r.attempts > 1]
    assert retried
    for r in retried:
        [*errors] = [a.error for a in r.history]
        assert all(e is not None and e.type == "BatchRequestError" for e in errors)
        assert all(e is not None and "server_error" in e.message for e in errors)


async def test_an_item_out_of_resubmissions_names_the_providers_code_and_message(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(batch_line_error_rate=1.0, batch_line_error_style="line")

    batch = BatchAPIRunner(llm_for(server), options=options_on(batch_clock, max_resubmits=1))

    [result] = await batch.arun(prompts(1))

    assert result.error is not None and result.attempts == 2
    assert result.error.type == "BatchRequestError"
    assert "server_error" in result.error.message
    assert "injected fault" in result.error.message
    assert "failed" not in result.error.message.split(":")[-1]


@pytest.mark.parametrize(
    ("code", "kind", "again"),
    [
        ("server_error", BatchRequestError, True),
        ("timeout", BatchRequestError, True),
        ("rate_limit_exceeded", BatchRequestError, True),
        ("batch_expired", BatchJobUnfinishedError, True),
        ("batch_cancelled", BatchJobUnfinishedError, False),
        ("invalid_request_error", BatchRequestError, False),
    ],
)
def test_each_code_of_a_line_without_an_answer_decides_its_resubmission(
    code: str, kind: type[Exception], again: bool
) -> None:
    line = (
        b'{"custom_id": "3-1", "response": null, "error": {"code": "%s", "message": "why"}}'
        % code.encode()
    )

    [outcome] = parse_lines(line, batch_id="batch_9", status="completed")

    assert isinstance(outcome.error, kind)
    assert is_resubmittable(outcome.error) is again
    assert code in repr(outcome.error.__dict__) or code in str(outcome.error)
    assert "why" in str(outcome.error)


def test_a_line_error_without_a_code_stays_unfinished_with_the_jobs_status() -> None:
    error = unfinished_error(None, "no idea", "batch_1", "failed")

    assert isinstance(error, BatchJobUnfinishedError)
    assert error.status == "failed" and not is_resubmittable(error)
