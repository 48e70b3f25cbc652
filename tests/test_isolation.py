"""Nothing a user's code does aborts a batch, or breaks a view of its results.

An exception whose ``__str__``/``__repr__`` raises, an input whose ``repr``/``str``
raises: each stays its own item's business, and every view of the results
(reprs, HTML, summary, records, pandas, ``raise_for_errors``, exports) still works.
The progress hook and the bar are covered in ``test_progress.py``.
"""

from __future__ import annotations

import asyncio
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from langchain_batchkit import BatchFailedError, BatchResult, ItemResult, RetryPolicy, batchkit
from langchain_batchkit.multimodal import captions_to_records, to_csv, to_jsonl
from langchain_batchkit.testing import FakeClock


class UnprintableError(Exception):
    """An exception that cannot be shown: its ``__str__`` and ``__repr__`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


class UnprintableInput:
    """An input that cannot be shown: its ``__repr__`` and ``__str__`` raise."""

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


class UnnamablePath(os.PathLike[str]):
    """A path-like input whose ``__fspath__`` raises."""

    def __fspath__(self) -> str:
        raise RuntimeError("__fspath__ is broken")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


def _raise_unprintable(x: Any) -> Any:
    if x == "bad":
        raise UnprintableError
    return x


def _every_view(results: BatchResult[Any, Any]) -> list[str]:
    """Render every view of ``results``; any of them raising fails the test.

    Records and the DataFrame hold the inputs themselves (showing those is the
    caller's business), so they are built but not printed.
    """
    with pytest.raises(BatchFailedError) as info:
        results.raise_for_errors()
    assert len(results.to_records()) == len(results.to_pandas()) == len(results)
    return [
        repr(results),
        str(results),
        results._repr_html_(),
        str(results.summary()),
        *(repr(r) for r in results),
        *(str(r.error) for r in results if r.error),
        *(repr(r.error) for r in results if r.error),
        str(info.value),
        "".join(traceback.format_exception(info.value)),
    ]


@pytest.mark.parametrize("path", ["sync", "async"])
def test_an_exception_whose_str_raises_is_only_its_items_error(
    path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    events: list[int] = []
    kit = batchkit(
        RunnableLambda(_raise_unprintable),
        retry=RetryPolicy(max_attempts=2, retry_on=lambda e: True, sleep=clock.sleep, clock=clock),
        progress=True,
        on_progress=lambda e: events.append(e.index),
    )
    inputs = ["a", "bad", "b"]

    results = kit.batch(inputs) if path == "sync" else asyncio.run(kit.abatch(inputs))

    assert results.outputs == ["a", None, "b"]
    error = results[1].error
    assert error is not None and error.type == "UnprintableError"
    assert "UnprintableError" in error.message and "str()" in error.message
    assert results[1].attempts == 2 and len(results[1].history) == 1
    assert sorted(events) == [0, 1, 1, 2]  # a retry event, then three done events
    assert "ok=2 failed=1" in capsys.readouterr().err
    assert all(_every_view(results))


def test_an_input_whose_repr_raises_is_shown_without_raising() -> None:
    broken = UnprintableInput()
    kit = batchkit(RunnableLambda[Any, float](lambda x: 1 / 0), retry=None, progress=False)

    results = kit.batch([broken, "fine"])

    assert [r.error.type for r in results if r.error] == ["ZeroDivisionError"] * 2
    assert results[0].input is broken
    assert all(_every_view(results))
    assert "&lt;UnprintableInput object: repr() raised RuntimeError&gt;" in results._repr_html_()
    assert "input=<UnprintableInput object: repr() raised RuntimeError>" in repr(results[0])


def test_an_output_whose_repr_raises_is_shown_without_raising() -> None:
    broken = UnprintableInput()

    result = ItemResult(0, "x", broken)

    assert "output=<UnprintableInput object: repr() raised RuntimeError>" in repr(result)


def test_caption_exports_survive_a_source_that_cannot_be_named(tmp_path: Path) -> None:
    results = BatchResult([ItemResult(0, UnnamablePath(), "a caption")])

    records = captions_to_records(results)
    to_csv(results, tmp_path / "c.csv")
    to_jsonl(results, tmp_path / "c.jsonl")

    assert records[0].source == "<UnnamablePath object: its name raised RuntimeError>"
    assert "UnnamablePath object" in (tmp_path / "c.csv").read_text(encoding="utf-8")
    assert "UnnamablePath object" in (tmp_path / "c.jsonl").read_text(encoding="utf-8")
