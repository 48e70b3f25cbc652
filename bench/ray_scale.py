"""batchkit on Ray: items/s and rate-limit adherence with 1 vs 2 workers.

Every row sends the same N chat requests through real ChatOpenAI over HTTP to the
local fake OpenAI server (fixed latency; at most LIMIT requests admitted in any
WINDOW seconds, the rest answered 429), with ``run_on_ray`` on a local Ray
instance. Each item also burns CPU_MS of pure-Python work after the model call
(parsing, post-processing): the part of a real chain that holds one process's GIL
and that more workers spread over more cores.

One table per limit (default: 100 per window, which one worker cannot reach, then
30 per window, which it can). Rows:
  * 1 worker / 2 workers sharing one ClusterRateLimit at the provider's limit;
  * 2 workers each with its own RateLimit at the full limit (the naive set-up).

Columns: wall s (including actor start-up, about 4 s), items/s over the wall, req/s
at the server (first to last admitted request), the most requests the server
admitted in any WINDOW vs LIMIT (it never admits more: the excess is answered
429), and the 429s.

Usage: python bench/ray_scale.py [--items 600] [--limits 100,30] [--window 0.5]
           [--latency 0.1] [--cpu-ms 8] [--batch-size 16] [--max-concurrency 8]
           [--headroom 0.97]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from functools import partial
from typing import Any

import ray
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_openai import ChatOpenAI

from langchain_batchkit import RateLimit, RetryPolicy
from langchain_batchkit.ray import ClusterRateLimit, run_on_ray
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig


def _burn(cpu_ms: float, message: Any) -> str:
    deadline = time.thread_time() + cpu_ms / 1000
    while time.thread_time() < deadline:
        pass
    return f"{os.getpid()}|{message.content}"


def make_chain(
    base_url: str, cpu_ms: float, own_limit_rpm: float | None = None
) -> Runnable[Any, Any]:
    """Built in each worker: the model (with the naive per-worker limiter if asked), then CPU."""
    llm = ChatOpenAI(
        base_url=base_url,
        api_key="sk-bench",  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
        timeout=30,
        rate_limiter=RateLimit(requests_per_minute=own_limit_rpm) if own_limit_rpm else None,
    )
    return llm | RunnableLambda(partial(_burn, cpu_ms))


def run(args: argparse.Namespace, limit_per_window: int, workers: int, *, shared: bool) -> None:
    config = FakeServerConfig(
        requests_per_minute=limit_per_window,
        window_seconds=args.window,
        latency=args.latency,
        seed=1,
    )
    rpm = limit_per_window * 60 / args.window
    prompts = [f"item {i}" for i in range(args.items)]
    with FakeOpenAIServer(config) as server:
        limit = (
            ClusterRateLimit(requests_per_minute=rpm, headroom=args.headroom) if shared else None
        )
        factory = partial(make_chain, server.base_url, args.cpu_ms, None if shared else rpm)
        start = time.perf_counter()
        rows = run_on_ray(
            factory,
            prompts,
            batch_size=args.batch_size,
            concurrency=workers,
            rate_limit=limit,
            max_concurrency=args.max_concurrency,
            retry=RetryPolicy(max_attempts=10, max_backoff=2.0),
            progress=False,
        ).take_all()
        wall = time.perf_counter() - start
        stats = server.stats()
    ok = sum(r["status"] == "ok" for r in rows)
    pids = {json.loads(r["output"]).split("|")[0] for r in rows if r["output"]}
    admitted = sorted(stats.admitted_timestamps)
    served = (len(admitted) - 1) / (admitted[-1] - admitted[0]) if len(admitted) > 1 else 0.0
    name = "shared ClusterRateLimit" if shared else "own RateLimit per worker"
    print(
        f"{workers:7d} {name:26} {ok:5d}/{len(rows):<5d} {wall:7.2f} {ok / wall:8.1f} "
        f"{served:8.1f} {stats.max_admitted_in_window(args.window):6d}/{limit_per_window:<4d} "
        f"{stats.rate_limited:6d}  ({len(pids)} pids)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--limits", default="100,30", help="comma-separated, per window")
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--cpu-ms", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument("--headroom", type=float, default=0.97)
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        for limit in (int(x) for x in args.limits.split(",")):
            print(
                f"\n{args.items} items, limit {limit} requests per {args.window:g} s window "
                f"({limit / args.window:.0f} req/s), latency {args.latency * 1000:.0f} ms, "
                f"{args.cpu_ms:g} ms CPU per item, batch {args.batch_size}, "
                f"max_concurrency {args.max_concurrency} per block, headroom {args.headroom:g}, "
                f"{os.cpu_count()} CPUs"
            )
            print(
                f"{'workers':>7} {'limiter':26} {'ok/total':>11} {'wall s':>7} {'items/s':>8} "
                f"{'srv r/s':>8} {'max/win':>11} {'429s':>6}"
            )
            run(args, limit, 1, shared=True)
            run(args, limit, 2, shared=True)
            run(args, limit, 2, shared=False)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
