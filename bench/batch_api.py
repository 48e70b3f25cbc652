"""Batch API jobs at scale through each provider's fake endpoint: every item exactly once.

N items (5,000 by default) through ``BatchAPIRunner(prompt | model | StrOutputParser())``
for each provider the runner supports, with the real LangChain model class and SDK
client over HTTP against the local fake server. The fake's batch timeline runs on a
fake clock, so the wall time is the runner's own work (building requests with the
provider's payload code, uploading, polling, reading results, parsing) plus the fake
server's, not the provider's hours. A share of lines fails with a server error and is
resubmitted, and jobs are split at ``--per-job`` requests.

"Exactly once" is checked three ways: one result per input index, each output the
echo of *its* input, and the server's processed lines equal to the items plus the
resubmissions the results report.

Usage: python bench/batch_api.py [--items 5000] [--per-job 2000] [--error-rate 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import AzureChatOpenAI, ChatOpenAI

from langchain_batchkit import BatchAPIOptions, BatchAPIRunner
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig

KEY = "bench-" + "key"


def _openai(server: FakeOpenAIServer) -> Any:
    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=server.base_url,
        api_key=KEY,  # type: ignore[arg-type]
        max_retries=0,
    )


def _azure(server: FakeOpenAIServer) -> Any:
    return AzureChatOpenAI(
        azure_endpoint=server.url,
        azure_deployment="gpt-4o-mini-batch",  # answers as gpt-4o-mini
        api_version="2025-04-01-preview",
        api_key=KEY,  # type: ignore[arg-type]
        max_retries=0,
    )


def _anthropic(server: FakeOpenAIServer) -> Any:
    from langchain_anthropic import ChatAnthropic  # the 'anthropic' extra

    return ChatAnthropic(  # type: ignore[call-arg]
        model="claude-3-5-haiku-latest",
        base_url=server.url,
        api_key=KEY,  # type: ignore[arg-type]
        max_retries=0,
    )


PROVIDERS: dict[str, Callable[[FakeOpenAIServer], Any]] = {
    "openai": _openai,
    "azure": _azure,
    "anthropic": _anthropic,
}


async def _one(name: str, make: Callable[[FakeOpenAIServer], Any], args: argparse.Namespace) -> str:
    clock = FakeClock()
    config = FakeServerConfig(
        clock=clock, batch_completion_delay=600.0, batch_line_error_rate=args.error_rate, seed=7
    )
    with FakeOpenAIServer(config) as server:
        prompt = ChatPromptTemplate.from_messages([("user", "{text}")])
        chain = prompt | make(server) | StrOutputParser()
        options = BatchAPIOptions(
            clock=clock, sleep=clock.sleep, max_requests_per_job=args.per_job, max_resubmits=5
        )
        inputs = [{"text": f"item {i}"} for i in range(args.items)]
        started = time.perf_counter()
        results = await BatchAPIRunner(chain, options=options).arun(inputs)
        wall = time.perf_counter() - started
        stats = server.stats()
    indices = sorted(r.index for r in results)
    once = indices == list(range(args.items))
    own = all(r.output == f"echo: item {r.index}" for r in results)
    submissions = sum(r.attempts for r in results)
    lines = stats.batch_lines_processed
    return (
        f"{name:<10} {args.items:>6} {len(results.succeeded):>6} {len(results.failed):>6} "
        f"{submissions - args.items:>9} {lines:>7} {'yes' if once and own else 'NO':>13} "
        f"{stats.batches_created:>5} {wall:>7.1f}s {args.items / wall:>8.0f}/s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--per-job", type=int, default=2000)
    parser.add_argument("--error-rate", type=float, default=0.01)
    parser.add_argument("--providers", nargs="*", default=list(PROVIDERS))
    args = parser.parse_args()
    print(
        f"{args.items} items, jobs of <= {args.per_job} requests, {args.error_rate:.0%} of lines "
        "fail with a server error and are resubmitted; fake server, fake clock"
    )
    print(
        f"{'provider':<10} {'items':>6} {'ok':>6} {'failed':>6} {'resubmits':>9} {'lines':>7} "
        f"{'exactly once':>13} {'jobs':>5} {'wall':>8} {'items/s':>9}"
    )
    for name in args.providers:
        print(await _one(name, PROVIDERS[name], args))


if __name__ == "__main__":
    asyncio.run(main())
