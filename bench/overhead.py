"""Wrapper overhead: batchkit ``abatch`` vs raw ``Runnable.abatch``, side by side, one run.

A zero-latency async runnable isolates the cost of the machinery (configs,
callbacks, scheduling, result records). Both sides run the same N items at the
same concurrency, alternating, several rounds; the median of each is compared.

The checkpoint row writes every item to a fresh SQLite file (target: within
1.5x raw); the others keep results in memory only (target: within 1.10x raw).

Usage: python bench/overhead.py [--items 10000] [--concurrency 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

from langchain_core.runnables import RunnableLambda

from langchain_batchkit import batchkit


async def _echo(x: int) -> int:
    return x


async def _timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def main(items: int, concurrency: int, rounds: int) -> None:
    chain = RunnableLambda(_echo)
    inputs = list(range(items))
    kit = batchkit(chain, max_concurrency=concurrency, progress=False)
    kit_bar = batchkit(chain, max_concurrency=concurrency, progress=True)
    config = {"max_concurrency": concurrency}
    tmp = tempfile.mkdtemp(prefix="batchkit-bench-")
    rounds_done = [0]

    async def with_checkpoint() -> object:
        rounds_done[0] += 1  # a fresh file each round: every item is really written
        path = os.path.join(tmp, f"run-{rounds_done[0]}.sqlite")
        return await batchkit(
            chain, max_concurrency=concurrency, progress=False, checkpoint=path
        ).abatch(inputs)

    sides: dict[str, Callable[[], Awaitable[object]]] = {
        "raw Runnable.abatch": lambda: chain.abatch(inputs, config=config),  # type: ignore[arg-type]
        "batchkit abatch": lambda: kit.abatch(inputs),
        "batchkit abatch + bar": lambda: kit_bar.abatch(inputs),
        "batchkit abatch + checkpoint": with_checkpoint,
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    await sides["raw Runnable.abatch"]()  # warm-up
    for _ in range(rounds):
        for name, fn in sides.items():
            times[name].append(await _timed(fn))

    raw = statistics.median(times["raw Runnable.abatch"])
    print(f"\n{items} items, zero-latency runnable, concurrency {concurrency}, {rounds} rounds")
    print(f"{'':30} {'median s':>9} {'items/s':>9} {'vs raw':>7}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:30} {med:9.3f} {items / med:9.0f} {med / raw:6.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.items, args.concurrency, args.rounds))
