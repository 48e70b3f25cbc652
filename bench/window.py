"""Sliding window vs fixed chunks, heavy-tailed latencies, same concurrency, one run.

The course material's chunking gathers C items at a time: each chunk waits for
its slowest item before the next starts. batchkit's window starts the next item
as soon as any finishes. Latencies are drawn once (lognormal, seeded) and both
sides run the same items with the same draws.

Usage: python bench/window.py [--items 2000] [--concurrency 20] [--median 0.02] [--sigma 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time

from langchain_core.runnables import RunnableLambda

from langchain_batchkit import batchkit


async def main(items: int, concurrency: int, median: float, sigma: float) -> None:
    rng = random.Random(42)
    delays = [rng.lognormvariate(math.log(median), sigma) for _ in range(items)]

    async def work(i: int) -> int:
        await asyncio.sleep(delays[i])
        return i

    chain = RunnableLambda(work)
    kit = batchkit(chain, max_concurrency=concurrency, retry=None, progress=False)

    start = time.perf_counter()
    results = await kit.abatch(range(items))
    window = time.perf_counter() - start
    assert results.outputs == list(range(items))

    start = time.perf_counter()
    for lo in range(0, items, concurrency):
        await asyncio.gather(*(chain.ainvoke(i) for i in range(lo, min(lo + concurrency, items))))
    chunked = time.perf_counter() - start

    ideal = sum(delays) / concurrency
    print(
        f"\n{items} items, lognormal latency (median {median * 1000:.0f} ms, sigma {sigma}, "
        f"mean {sum(delays) / items * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms), "
        f"concurrency {concurrency}"
    )
    print(f"fixed chunks (gather {concurrency} at a time): {chunked:7.2f} s")
    print(f"batchkit sliding window:             {window:7.2f} s")
    print(f"work / concurrency (lower bound):    {ideal:7.2f} s")
    print(f"speed-up of the window over chunks:  {chunked / window:7.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--median", type=float, default=0.02)
    parser.add_argument("--sigma", type=float, default=1.0)
    a = parser.parse_args()
    asyncio.run(main(a.items, a.concurrency, a.median, a.sigma))
