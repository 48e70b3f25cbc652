"""Retry defaults for a batch job: rows lost and wall time, against plain langchain-core.

Two fault mixes on the local fake OpenAI server, real ``ChatOpenAI`` over HTTP,
``prompt | llm | parser`` through the sync path on every side:

* **heavy**: 10% 5xx, 5% dropped connections, 2% hung requests (1.5 s client
  timeout), 600 items: batchkit's default ``RetryPolicy()`` against the old
  default (3 attempts from 1 s) and plain ``chain.batch`` with the SDK's own
  2 retries.
* **demo**: the ``make demo`` mix (5% 5xx, 2% drops, lognormal 80 ms), 300 items at
  concurrency 8: batchkit with ``ChatOpenAI(max_retries=0)`` against plain
  ``chain.batch`` with SDK retries, for the same outcome.

* **litellm**: a proxy limited per FIXED window whose 429s carry no Retry-After and
  no x-ratelimit-* (as LiteLLM answers), scaled to 15 requests per 5 s window,
  120 items at concurrency 20, default options and no RateLimit, against plain
  ``chain.batch`` with the SDK's retries.

Usage: python bench/retry_defaults.py [--heavy-items 600] [--demo-items 300] [--skip-litellm]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from langchain_batchkit import RetryPolicy, batchkit
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig

PROMPT = ChatPromptTemplate.from_template("{q}")
OLD_DEFAULT = RetryPolicy(max_attempts=3, initial_backoff=1.0, max_total_time=300.0)


def _chain(server: FakeOpenAIServer, *, sdk_retries: int, timeout: float) -> Any:
    llm = ChatOpenAI(
        base_url=server.base_url,
        api_key="sk-bench",  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=sdk_retries,
        timeout=timeout,
    )
    return PROMPT | llm | StrOutputParser()


def _run_kit(
    config: FakeServerConfig, items: int, concurrency: int, timeout: float, policy: RetryPolicy
) -> tuple[int, int, float]:
    inputs = [{"q": f"item {i}"} for i in range(items)]
    with FakeOpenAIServer(config) as server:
        kit = batchkit(
            _chain(server, sdk_retries=0, timeout=timeout),
            retry=policy,
            max_concurrency=concurrency,
            progress=False,
        )
        start = time.perf_counter()
        results = kit.batch(inputs)
        wall = time.perf_counter() - start
    wrong = sum(r.output != f"echo: item {r.index}" for r in results.succeeded)
    assert wrong == 0, f"{wrong} items got another item's answer"
    return len(results.succeeded), len(results.failed), wall


def _run_core(
    config: FakeServerConfig, items: int, concurrency: int, timeout: float
) -> tuple[int, int, float]:
    inputs = [{"q": f"item {i}"} for i in range(items)]
    with FakeOpenAIServer(config) as server:
        chain = _chain(server, sdk_retries=2, timeout=timeout)
        start = time.perf_counter()
        outs = chain.batch(inputs, {"max_concurrency": concurrency}, return_exceptions=True)
        wall = time.perf_counter() - start
    failed = sum(isinstance(o, Exception) for o in outs)
    return items - failed, failed, wall


def _row(name: str, ok: int, failed: int, wall: float) -> None:
    print(f"{name:<44} {ok:>5} {failed:>7} {wall:>8.2f}")


def main(heavy_items: int, demo_items: int, litellm: bool) -> None:
    heavy = FakeServerConfig(
        latency=0.01, error_rate_5xx=0.10, drop_rate=0.05, hang_rate=0.02, seed=11
    )
    print(f"\nheavy: {heavy_items} items, 10% 5xx, 5% drops, 2% hangs (1.5 s timeout), C=16")
    print(f"{'':<44} {'ok':>5} {'failed':>7} {'wall s':>8}")
    _row("batchkit, default RetryPolicy()", *_run_kit(heavy, heavy_items, 16, 1.5, RetryPolicy()))
    _row("batchkit, old default (3 attempts from 1 s)", *_run_kit(
        heavy, heavy_items, 16, 1.5, OLD_DEFAULT
    ))  # fmt: skip
    _row("plain chain.batch, SDK max_retries=2", *_run_core(heavy, heavy_items, 16, 1.5))

    demo = FakeServerConfig(
        latency=0.08,
        latency_distribution="lognormal",
        requests_per_minute=3000,
        error_rate_5xx=0.05,
        drop_rate=0.02,
        seed=42,
    )
    print(f"\ndemo mix: {demo_items} items, 5% 5xx, 2% drops, lognormal 80 ms, C=8")
    print(f"{'':<44} {'ok':>5} {'failed':>7} {'wall s':>8}")
    _row("batchkit, default RetryPolicy()", *_run_kit(demo, demo_items, 8, 10.0, RetryPolicy()))
    _row("plain chain.batch, SDK max_retries=2", *_run_core(demo, demo_items, 8, 10.0))
    if not litellm:
        return
    proxy = FakeServerConfig(
        latency=0.02,
        requests_per_minute=15,
        window_seconds=5.0,
        rate_limit_window="fixed",
        send_retry_after=False,
        send_ratelimit_headers=False,
        seed=3,
    )
    print("\nlitellm: 120 items, C=20, 15 requests per fixed 5 s window, 429s say nothing")
    print(f"{'':<44} {'ok':>5} {'failed':>7} {'wall s':>8}")
    _row(
        "batchkit, default RetryPolicy(), no RateLimit",
        *_run_kit(proxy, 120, 20, 10.0, RetryPolicy()),
    )
    _row("plain chain.batch, SDK max_retries=2", *_run_core(proxy, 120, 20, 10.0))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heavy-items", type=int, default=600)
    parser.add_argument("--demo-items", type=int, default=300)
    parser.add_argument("--skip-litellm", action="store_true")
    a = parser.parse_args()
    main(a.heavy_items, a.demo_items, not a.skip_litellm)
