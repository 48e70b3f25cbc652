"""A finished row is committed within flush_interval even while the run waits on a slow item."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from langchain_core.runnables import RunnableLambda

from langchain_batchkit import Checkpoint, batchkit
from tests.test_checkpoint_commits import committed


class WatchedCheckpoint(Checkpoint):
    """A checkpoint that says when it committed something."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, flush_interval=0.05)
        self.flushed = threading.Event()

    def flush(self) -> None:
        had = bool(self._pending)
        super().flush()
        if had:
            self.flushed.set()


def test_the_sync_driver_commits_while_a_slow_item_runs(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    checkpoint = WatchedCheckpoint(path)
    seen: list[int] = []

    def work(x: int) -> int:
        if x == 1:  # item 0 finished; the run now only waits for this one
            assert checkpoint.flushed.wait(10)
            seen.append(committed(path))
        return x

    kit = batchkit(RunnableLambda(work), checkpoint=checkpoint, max_concurrency=1, progress=False)
    kit.batch([0, 1])

    assert seen == [1]


async def test_the_async_driver_commits_while_a_slow_item_runs(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    checkpoint = WatchedCheckpoint(path)
    seen: list[int] = []

    async def work(x: int) -> int:
        if x == 1:
            assert await asyncio.to_thread(checkpoint.flushed.wait, 10)
            seen.append(committed(path))
        return x

    kit = batchkit(RunnableLambda(work), checkpoint=checkpoint, max_concurrency=1, progress=False)
    await kit.abatch([0, 1])

    assert seen == [1]
