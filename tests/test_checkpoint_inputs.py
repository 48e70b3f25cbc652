"""Nothing about a user's value may abort a batch: a value whose repr raises is
stored as a placeholder, and an error message that shows it still reads."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from langchain_batchkit import Checkpoint, CheckpointError, batchkit
from langchain_batchkit._serialize import dumps_value

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
    assert json.loads(dumps_value(Hostile())) == {"repr": "<Hostile: repr() raised RuntimeError>"}


def test_refusing_an_input_whose_repr_raises_still_names_the_index(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    kit: Any = batchkit(RunnableLambda(lambda x: "ok"), checkpoint=path)
    kit.batch([1, 2])
    with pytest.raises(CheckpointError, match="different input at index 0"):
        kit.batch([Hostile(), 2])
