"""Throughput against a provider rate limit: batchkit + RateLimit vs raw ChatOpenAI.abatch.

Both sides send the same N chat requests through real ChatOpenAI over HTTP to the
local fake OpenAI server, which admits at most LIMIT requests in any WINDOW
seconds (sliding window) and answers the rest with 429 + Retry-After, at the
same concurrency, one after the other in one run.

Usage: python bench/rate_limit.py [--items 400] [--limit 20] [--window 1.0]
                                  [--concurrency 16] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from langchain_openai import ChatOpenAI

from langchain_batchkit import RateLimit, RetryPolicy, batchkit
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig


def _llm(server: FakeOpenAIServer, max_retries: int | None) -> ChatOpenAI:
    extra: dict[str, Any] = {} if max_retries is None else {"max_retries": max_retries}
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="sk-bench",  # type: ignore[arg-type]
        model="gpt-4o-mini",
        timeout=30,
        **extra,
    )


def _report(
    name: str, n: int, ok: int, wall: float, server: FakeOpenAIServer, ideal: float
) -> None:
    stats = server.stats()
    total = sum(stats.responses_by_status.values())
    share = stats.rate_limited / total if total else 0.0
    rate = ok / wall
    print(
        f"{name:34} {ok:5d}/{n:<5d} {wall:7.2f} {rate:8.2f} {rate / ideal:7.1%} "
        f"{total:6d} {stats.rate_limited:6d} {share:6.1%}"
    )


async def main(items: int, limit: int, window: float, concurrency: int, latency: float) -> None:
    config = FakeServerConfig(
        requests_per_minute=limit, window_seconds=window, latency=latency, seed=1
    )
    prompts: list[Any] = [f"item {i}" for i in range(items)]
    ideal = limit / window
    print(
        f"\n{items} items, limit {limit} requests per {window:g} s window "
        f"({ideal:.1f} req/s), concurrency {concurrency}, latency {latency * 1000:.0f} ms"
    )
    print(
        f"{'':34} {'ok/total':>11} {'wall s':>7} {'req/s':>8} {'of limit':>7} "
        f"{'reqs':>6} {'429s':>6} {'429 %':>6}"
    )

    with FakeOpenAIServer(config) as server:
        rpm = limit * 60 / window
        kit = batchkit(
            _llm(server, max_retries=0),
            rate_limit=RateLimit(requests_per_minute=rpm),
            retry=RetryPolicy(max_attempts=6),
            max_concurrency=concurrency,
            progress=False,
        )
        start = time.perf_counter()
        results = await kit.abatch(prompts)
        wall = time.perf_counter() - start
        _report("batchkit + RateLimit(rpm)", items, len(results.succeeded), wall, server, ideal)

    with FakeOpenAIServer(config) as server:
        llm = _llm(server, max_retries=None)  # ChatOpenAI's default: 2 SDK retries
        start = time.perf_counter()
        outs = await llm.abatch(
            prompts, config={"max_concurrency": concurrency}, return_exceptions=True
        )
        wall = time.perf_counter() - start
        ok = sum(not isinstance(o, Exception) for o in outs)
        _report("raw ChatOpenAI.abatch (SDK retries)", items, ok, wall, server, ideal)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05)
    a = parser.parse_args()
    asyncio.run(main(a.items, a.limit, a.window, a.concurrency, a.latency))
