"""MicroBatcher vs unbatched single calls, side by side, one run.

The endpoint is a fake embedding function that costs a fixed overhead per call
plus a small cost per item (20 ms + 0.1 ms/item by default) and serves at most
``--capacity`` calls at once, as a model server or a connection pool does. N
callers each embed one text at the same time: unbatched, each is one call;
through a MicroBatcher, concurrent calls share calls of up to ``--batch-size``.

Usage: python bench/microbatch.py [--calls 1000] [--batch-size 64] [--capacity 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from langchain_batchkit._microbatch import MicroBatcher


class FakeEmbeddings:
    """An endpoint with a fixed cost per call, a cost per item and limited capacity."""

    def __init__(self, per_call: float, per_item: float, capacity: int) -> None:
        self.per_call = per_call
        self.per_item = per_item
        self.capacity = capacity
        self.calls = 0
        self._slots: asyncio.Semaphore | None = None

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.capacity)
        async with self._slots:
            self.calls += 1
            await asyncio.sleep(self.per_call + self.per_item * len(texts))
            return [[float(len(t)), 1.0] for t in texts]


async def _measure(
    n: int, call: Callable[[str], Awaitable[list[float]]]
) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def one(i: int) -> None:
        start = time.perf_counter()
        await call(f"text {i}")
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - start, sorted(latencies)


async def main(calls: int, batch_size: int, queue_time: float, capacity: int) -> None:
    per_call, per_item = 0.020, 0.0001

    plain = FakeEmbeddings(per_call, per_item, capacity)

    async def unbatched(text: str) -> list[float]:
        return (await plain.aembed_documents([text]))[0]

    raw_wall, raw_lat = await _measure(calls, unbatched)

    batched_endpoint = FakeEmbeddings(per_call, per_item, capacity)
    batcher = MicroBatcher(
        batched_endpoint.aembed_documents,
        max_batch_size=batch_size,
        max_queue_time=queue_time,
        concurrency=capacity,
    )
    async with batcher:
        mb_wall, mb_lat = await _measure(calls, batcher.ainvoke)

    print(
        f"{calls} concurrent single calls; endpoint: {per_call * 1000:.0f} ms/call + "
        f"{per_item * 1000:.1f} ms/item, {capacity} calls at once; MicroBatcher("
        f"max_batch_size={batch_size}, max_queue_time={queue_time}, concurrency={capacity})"
    )
    print(f"{'':24}{'wall s':>8}{'calls/s':>10}{'endpoint calls':>16}{'p50 ms':>8}{'p95 ms':>8}")
    for name, wall, lat, endpoint_calls in (
        ("unbatched ainvoke", raw_wall, raw_lat, plain.calls),
        ("MicroBatcher.ainvoke", mb_wall, mb_lat, batched_endpoint.calls),
    ):
        p50 = statistics.median(lat) * 1000
        p95 = lat[int(0.95 * (len(lat) - 1))] * 1000
        print(f"{name:24}{wall:8.3f}{calls / wall:10.0f}{endpoint_calls:16d}{p50:8.1f}{p95:8.1f}")
    print(f"speedup: {raw_wall / mb_wall:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--queue-time", type=float, default=0.005)
    parser.add_argument("--capacity", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.batch_size, args.queue_time, args.capacity))
