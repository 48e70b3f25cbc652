"""Soak: 1000 items against a faulty server; every item must end ok but the poisoned ones.

The local fake OpenAI server answers 10% of requests with 5xx, drops 5% of
connections and leaves 2% hanging (the client times out); prompts containing
"poison" are always rejected with 400. batchkit must finish every other item
and fail each poisoned one after exactly one attempt.

Usage: python bench/faults.py [--items 1000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time

from langchain_openai import ChatOpenAI

from langchain_batchkit import RetryPolicy, batchkit
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig


async def main(items: int, concurrency: int) -> int:
    config = FakeServerConfig(
        latency=0.01,
        error_rate_5xx=0.10,
        drop_rate=0.05,
        hang_rate=0.02,
        reject_prompts=frozenset({"poison"}),
        seed=7,
    )
    prompts = [f"poison {i}" if i % 50 == 0 else f"item {i}" for i in range(items)]
    poisoned = {i for i in range(items) if i % 50 == 0}
    with FakeOpenAIServer(config) as server:
        llm = ChatOpenAI(
            base_url=server.base_url,
            api_key="sk-bench",  # type: ignore[arg-type]
            model="gpt-4o-mini",
            max_retries=0,
            timeout=1.0,
        )
        kit = batchkit(
            llm,
            retry=RetryPolicy(max_attempts=8, initial_backoff=0.05, max_backoff=1.0),
            max_concurrency=concurrency,
            progress=False,
        )
        start = time.perf_counter()
        results = await kit.abatch(prompts)
        wall = time.perf_counter() - start
        stats = server.stats()

    failed = {r.index for r in results.failed}
    poisoned_attempts = {results[i].attempts for i in poisoned}
    wrong = [r.index for r in results.succeeded if r.output.content != f"echo: {r.input}"]  # type: ignore[union-attr]
    attempts = collections.Counter(r.attempts for r in results)
    print(f"\n{items} items, concurrency {concurrency}: 10% 5xx, 5% drops, 2% hangs (1 s timeout)")
    print(f"wall {wall:.2f} s, {len(results.succeeded)} ok, {len(failed)} failed")
    responses = dict(stats.responses_by_status)
    print(f"server: {sum(responses.values())} responses {responses},")
    print(f"        {stats.dropped} dropped, {stats.hung} hung")
    print(f"attempts per item: {dict(sorted(attempts.items()))}")
    ok = failed == poisoned and poisoned_attempts == {1} and not wrong
    print(
        f"failed == the {len(poisoned)} poisoned items: {failed == poisoned}; "
        f"each after one attempt: {poisoned_attempts == {1}}; wrong answers: {len(wrong)}"
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    a = parser.parse_args()
    raise SystemExit(asyncio.run(main(a.items, a.concurrency)))
