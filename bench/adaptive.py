"""Adaptive RateLimit against a limit it was not told: a LiteLLM-like proxy.

The fake OpenAI server counts requests per FIXED window and answers the rest with
429s that carry no ``Retry-After`` and no ``x-ratelimit-*`` headers, as a LiteLLM
proxy limited to 120 requests a minute does. Real ``ChatOpenAI(max_retries=0)``
calls go over HTTP through ``batchkit`` with the same ``RetryPolicy`` in three
runs, one after the other, each on a fresh server:

- ``RateLimit(requests_per_minute=FACTOR x the real limit, adaptive=True)``: the
  user's number is too high, the limiter has to find the real one;
- ``RateLimit(requests_per_minute=the real limit)``: the right number;
- no RateLimit at all (the items' retries alone).

Time is scaled down (20 requests per 2 s window instead of 120 per 60 s) so a run
takes seconds; ``--limit 120 --window 6`` keeps the real request counts per window.
Throughput is items answered per second over the run, as a share of the limit.

Usage: python bench/adaptive.py [--limit 20] [--window 2.0] [--windows 10]
                                [--factor 1.5] [--concurrency 16] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from langchain_openai import ChatOpenAI

from langchain_batchkit import RateLimit, RetryPolicy, batchkit
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig


def _llm(server: FakeOpenAIServer) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="sk-bench",  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
        timeout=30,
    )


async def _run(
    name: str,
    config: FakeServerConfig,
    prompts: list[Any],
    limit: RateLimit | None,
    concurrency: int,
    per_second: float,
) -> None:
    with FakeOpenAIServer(config) as server:
        kit = batchkit(
            _llm(server),
            rate_limit=limit,
            retry=RetryPolicy(max_attempts=10, max_total_time=600),
            max_concurrency=concurrency,
            progress=False,
        )
        start = time.perf_counter()
        results = await kit.abatch(prompts)
        wall = time.perf_counter() - start
        stats = server.stats()
    ok = len(results.succeeded)
    answered = sum(stats.responses_by_status.values())
    share = stats.rate_limited / answered if answered else 0.0
    rate = ok / wall
    learned = ""
    if limit is not None and limit.requests_per_minute is not None:
        paced = limit.stats().pace * limit.requests_per_minute * limit.headroom / 60
        learned = f"paced at {paced:.1f}/s in the end"
    print(
        f"{name:34} {ok:5d} {len(results.failed):6d} {wall:7.2f} {rate:7.2f} "
        f"{rate / per_second:8.1%} {answered:6d} {stats.rate_limited:5d} {share:6.1%}  {learned}"
    )


async def main(
    limit: int, window: float, windows: int, factor: float, concurrency: int, latency: float
) -> None:
    config = FakeServerConfig(
        requests_per_minute=limit,
        window_seconds=window,
        rate_limit_window="fixed",
        send_retry_after=False,
        send_ratelimit_headers=False,
        latency=latency,
        seed=1,
    )
    per_second = limit / window
    real_rpm = limit * 60 / window
    prompts: list[Any] = [f"item {i}" for i in range(limit * windows)]
    print(
        f"\n{len(prompts)} items; proxy limit {limit} requests per fixed {window:g} s window "
        f"({per_second:.1f}/s, {real_rpm:.0f}/min), 429s with no Retry-After and no "
        f"x-ratelimit-*; concurrency {concurrency}, latency {latency * 1000:.0f} ms; "
        "RetryPolicy(max_attempts=10, max_total_time=600)"
    )
    print(
        f"{'':34} {'ok':>5} {'failed':>6} {'wall s':>7} {'items/s':>7} {'of limit':>8} "
        f"{'reqs':>6} {'429s':>5} {'429 %':>6}"
    )
    runs: list[tuple[str, RateLimit | None]] = [
        (
            f"RateLimit({factor:g}x limit, adaptive)",
            RateLimit(requests_per_minute=real_rpm * factor, adaptive=True),
        ),
        ("RateLimit(the real limit)", RateLimit(requests_per_minute=real_rpm)),
        ("no RateLimit (retries only)", None),
    ]
    for name, rate_limit in runs:
        await _run(name, config, prompts, rate_limit, concurrency, per_second)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--factor", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05)
    a = parser.parse_args()
    asyncio.run(main(a.limit, a.window, a.windows, a.factor, a.concurrency, a.latency))
