"""Progress counts top-level items only, on a bar and through a hook."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda

from langchain_batchkit import ProgressEvent, RootRunCounter, batchkit
from langchain_batchkit.testing import FakeChatModel


def _nested_chain(fail_on: tuple[str, ...] = ()) -> Runnable[dict[str, str], str]:
    return (
        ChatPromptTemplate.from_template("{topic}")
        | FakeChatModel(fail_if_contains=fail_on)
        | StrOutputParser()
    )


class NaiveCounter(BaseCallbackHandler):
    """The recipe's counter: one tick per on_chain_end, nested or not."""

    def __init__(self) -> None:
        self.count = 0

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        self.count += 1


def test_hook_gets_one_done_event_per_top_level_item() -> None:
    events: list[ProgressEvent] = []
    kit = batchkit(_nested_chain(fail_on=("t3",)), progress=False, on_progress=events.append)
    kit.batch([{"topic": f"t{i}"} for i in range(12)])

    assert [e.kind for e in events] == ["done"] * 12
    assert sorted(e.index for e in events) == list(range(12))
    assert [e.completed for e in events] == list(range(1, 13))
    last = events[-1]
    assert (last.total, last.succeeded, last.failed) == (12, 11, 1)
    assert events[-1].result is not None


def test_naive_callback_over_counts_but_root_run_counter_does_not() -> None:
    inputs = [{"topic": f"t{i}"} for i in range(12)]
    naive, ours = NaiveCounter(), RootRunCounter(total=12)

    _nested_chain().batch(inputs, config={"callbacks": [naive, ours]})

    assert naive.count == 36  # sequence + prompt + parser end per item
    assert ours.completed == 12
    assert ours.failed == 0


def test_root_run_counter_counts_failures_and_bare_models() -> None:
    counter = RootRunCounter()
    model = FakeChatModel(fail_if_contains=("x",))
    model.batch(["a", "x", "b"], config={"callbacks": [counter]}, return_exceptions=True)
    assert (counter.completed, counter.failed) == (3, 1)


def test_root_run_counter_works_when_bound_to_the_chain() -> None:
    counter = RootRunCounter()
    chain = _nested_chain().with_config(callbacks=[counter])
    chain.batch([{"topic": "a"}, {"topic": "b"}])
    assert counter.completed == 2


def test_root_run_counter_can_draw_a_bar(capsys: pytest.CaptureFixture[str]) -> None:
    counter = RootRunCounter(total=3, show_bar=True)
    _nested_chain().batch([{"topic": str(i)} for i in range(3)], config={"callbacks": [counter]})
    counter.close()
    assert "3/3" in capsys.readouterr().err


def test_bar_is_shown_for_ten_items_or_more(capsys: pytest.CaptureFixture[str]) -> None:
    batchkit(RunnableLambda(lambda x: x)).batch(list(range(10)))
    err = capsys.readouterr().err
    assert "10/10" in err
    assert "ok=10 failed=0" in err


def test_bar_is_not_shown_below_ten_items(capsys: pytest.CaptureFixture[str]) -> None:
    batchkit(RunnableLambda(lambda x: x)).batch(list(range(9)))
    assert capsys.readouterr().err == ""


def test_progress_false_turns_the_bar_off(capsys: pytest.CaptureFixture[str]) -> None:
    batchkit(RunnableLambda(lambda x: x), progress=False).batch(list(range(50)))
    assert capsys.readouterr().err == ""


def test_progress_true_forces_the_bar(capsys: pytest.CaptureFixture[str]) -> None:
    batchkit(RunnableLambda(lambda x: x), progress=True, desc="tiny").batch([1, 2])
    assert "tiny" in capsys.readouterr().err


def test_bar_counts_failures_in_its_postfix(capsys: pytest.CaptureFixture[str]) -> None:
    batchkit(RunnableLambda(lambda x: 1 // x)).batch([0, *range(1, 12)])
    assert "ok=11 failed=1" in capsys.readouterr().err


def test_bar_works_with_an_unknown_total(capsys: pytest.CaptureFixture[str]) -> None:
    kit = batchkit(RunnableLambda(lambda x: x))
    assert len(list(kit.stream_results(iter(range(5))))) == 5
    assert "5item" in capsys.readouterr().err.replace(" ", "")


def test_a_raising_hook_is_logged_once_and_the_batch_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: ProgressEvent) -> None:
        raise RuntimeError("display died")

    with caplog.at_level(logging.ERROR, logger="langchain_batchkit"):
        results = batchkit(RunnableLambda(lambda x: x), progress=False, on_progress=broken).batch(
            list(range(20))
        )
    assert results.outputs == list(range(20))
    assert len([r for r in caplog.records if "on_progress" in r.getMessage()]) == 1


def test_non_callable_hook_is_refused() -> None:
    with pytest.raises(ValueError, match="on_progress"):
        batchkit(RunnableLambda(lambda x: x), on_progress="print")  # type: ignore[arg-type]


def test_root_run_counter_ignores_child_runs() -> None:
    counter = RootRunCounter()
    parent = UUID(int=1)
    counter.on_chain_end({}, run_id=UUID(int=2), parent_run_id=parent)
    counter.on_llm_end(None, run_id=UUID(int=3), parent_run_id=parent)
    assert counter.completed == 0


# -- a broken hook or display never aborts the batch ----------------------------------------


async def test_a_raising_hook_is_logged_once_and_dropped_on_the_async_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken(event: ProgressEvent) -> None:
        calls.append(event.kind)
        raise RuntimeError("display died")

    with caplog.at_level(logging.ERROR, logger="langchain_batchkit"):
        kit = batchkit(RunnableLambda(lambda x: x), progress=False, on_progress=broken)
        results = await kit.abatch(list(range(20)))

    assert results.outputs == list(range(20))
    assert calls == ["done"]  # dropped after its first failure
    assert len([r for r in caplog.records if "on_progress" in r.getMessage()]) == 1


def test_a_hook_whose_error_cannot_be_printed_is_still_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("__str__ is broken")

    def broken(event: ProgressEvent) -> None:
        raise Unprintable

    with caplog.at_level(logging.ERROR, logger="langchain_batchkit"):
        kit = batchkit(RunnableLambda(lambda x: x), progress=False, on_progress=broken)
        results = kit.batch(list(range(5)))

    assert results.outputs == list(range(5))
    [record] = [r for r in caplog.records if "on_progress" in r.getMessage()]
    assert "Unprintable" in record.getMessage()


def test_the_hook_error_is_logged_with_secrets_redacted(caplog: pytest.LogCaptureFixture) -> None:
    def leaky(event: ProgressEvent) -> None:
        raise RuntimeError("upload failed: api_key=sk-live-ABCDEFGHIJKLMNOP123")

    with caplog.at_level(logging.DEBUG, logger="langchain_batchkit"):
        batchkit(RunnableLambda(lambda x: x), progress=False, on_progress=leaky).batch([1])

    [record] = [r for r in caplog.records if "on_progress" in r.getMessage()]
    assert "ABCDEFGHIJKLMNOP" not in logging.Formatter().format(record)
    assert "upload failed" in record.getMessage()


@pytest.mark.parametrize("path", ["sync", "async"])
def test_ctrl_c_in_the_hook_propagates_and_keeps_the_finished_items(path: str) -> None:
    def interrupt(event: ProgressEvent) -> None:
        raise KeyboardInterrupt

    kit = batchkit(RunnableLambda(lambda x: x), progress=False, on_progress=interrupt)

    with pytest.raises(KeyboardInterrupt):
        kit.batch([1, 2, 3]) if path == "sync" else asyncio.run(kit.abatch([1, 2, 3]))

    assert kit.last_run is not None and not kit.last_run.complete
    assert len(kit.last_run) >= 1  # the item being reported is kept


class _BrokenTerminal(io.TextIOBase):
    """A stream whose writes fail, like a closed or detached terminal."""

    def write(self, text: str) -> int:
        raise OSError("the terminal is gone")


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_bar_that_cannot_draw_is_dropped_and_the_batch_completes(
    path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "stderr", _BrokenTerminal())
    kit = batchkit(RunnableLambda(lambda x: x), progress=True)
    inputs = list(range(20))

    with caplog.at_level(logging.WARNING, logger="langchain_batchkit"):
        results = kit.batch(inputs) if path == "sync" else asyncio.run(kit.abatch(inputs))

    assert results.outputs == list(range(20))
    assert len([r for r in caplog.records if "progress bar" in r.getMessage()]) == 1


def test_a_bar_that_fails_mid_run_is_dropped_and_the_batch_completes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tqdm import tqdm

    updates = 0

    def update_then_fail(self: Any, n: float = 1) -> bool | None:
        nonlocal updates
        updates += 1
        if updates == 3:
            raise OSError("the terminal is gone")
        return None

    monkeypatch.setattr(tqdm, "update", update_then_fail)

    with caplog.at_level(logging.WARNING, logger="langchain_batchkit"):
        results = batchkit(RunnableLambda(lambda x: x), progress=True).batch(list(range(20)))

    assert results.outputs == list(range(20))
    assert updates == 3  # not called again once it failed
    assert len([r for r in caplog.records if "progress bar" in r.getMessage()]) == 1
