"""Batch API jobs at scale through each provider's fake endpoint: every item exactly once.

N items (5,000 by default) through ``BatchAPIRunner(prompt | model | StrOutputParser())``
for each provider the runner supports, with the real LangChain model class and SDK
client over HTTP against the local fake server. The fake's batch timeline runs on a
fake clock, so the wall time is the runner's own work (building requests with the
provider's payload code, uploading, polling, reading results, parsing) plus the fake
server's, not the provider's hours. A share of lines fails with a server error and is
resubmitted, and jobs are split at ``--per-job`` requests.

Scenarios: one per provider; ``gpt>claude``, a chain with two model steps (two
rounds, at two providers); ``openai+cap``, against an organisation's enqueued-token
limit that lets one job in at a time, learned by the runner from its first refusal.

"Exactly once" is checked two ways: one result per input index, and each output the
echo of *its* input; the lines the server ran are the items (times the rounds) plus
the resubmissions the results report ("resubmits").

Usage: python bench/batch_api.py [--items 5000] [--per-job 2000] [--error-rate 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
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


def _single(model: Callable[[FakeOpenAIServer], Any]) -> Callable[[FakeOpenAIServer], Any]:
    def chain(server: FakeOpenAIServer) -> Any:
        return _PROMPT | model(server) | StrOutputParser()

    return chain


def _two_rounds(server: FakeOpenAIServer) -> Any:
    """GPT, then Claude on GPT's answer: two rounds at two providers."""
    again: RunnableLambda[str, dict[str, str]] = RunnableLambda(lambda text: {"text": text})
    first = _PROMPT | _openai(server) | StrOutputParser()
    return first | again | _PROMPT | _anthropic(server) | StrOutputParser()


_PROMPT = ChatPromptTemplate.from_messages([("user", "{text}")])


@dataclass(frozen=True)
class Scenario:
    chain: Callable[[FakeOpenAIServer], Any]
    echoes: int = 1  # how many model steps echo the text
    server: dict[str, Any] = field(default_factory=dict)


SCENARIOS: dict[str, Scenario] = {
    "openai": Scenario(_single(_openai)),
    "azure": Scenario(_single(_azure)),
    "anthropic": Scenario(_single(_anthropic)),
    # two model steps: every item goes through two rounds, at two providers
    "gpt>claude": Scenario(_two_rounds, echoes=2),
    # an organisation's enqueued-token limit the runner learns from its first refusal
    "openai+cap": Scenario(_single(_openai), server={"batch_max_enqueued_tokens": 30_000}),
}


async def _one(name: str, scenario: Scenario, args: argparse.Namespace) -> str:
    clock = FakeClock()
    config = FakeServerConfig(
        clock=clock,
        batch_completion_delay=600.0,
        batch_line_error_rate=args.error_rate,
        seed=7,
        **scenario.server,
    )
    with FakeOpenAIServer(config) as server:
        options = BatchAPIOptions(
            clock=clock, sleep=clock.sleep, max_requests_per_job=args.per_job, max_resubmits=5
        )
        inputs = [{"text": f"item {i}"} for i in range(args.items)]
        started = time.perf_counter()
        results = await BatchAPIRunner(scenario.chain(server), options=options).arun(inputs)
        wall = time.perf_counter() - started
        stats = server.stats()
    indices = sorted(r.index for r in results)
    once = indices == list(range(args.items))
    echo = "echo: " * scenario.echoes
    own = all(r.output == f"{echo}item {r.index}" for r in results)
    submissions = sum(r.attempts for r in results)
    lines = stats.batch_lines_processed
    extra = submissions - args.items * scenario.echoes
    return (
        f"{name:<11} {args.items:>6} {len(results.succeeded):>6} {len(results.failed):>6} "
        f"{extra:>9} {lines:>7} {'yes' if once and own else 'NO':>13} "
        f"{stats.batches_created:>5} {stats.enqueued_token_refusals:>8} "
        f"{wall:>7.1f}s {args.items / wall:>8.0f}/s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--per-job", type=int, default=2000)
    parser.add_argument("--error-rate", type=float, default=0.01)
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    print(
        f"{args.items} items, jobs of <= {args.per_job} requests, {args.error_rate:.0%} of lines "
        "fail with a server error and are resubmitted; fake server, fake clock"
    )
    print(
        f"{'scenario':<11} {'items':>6} {'ok':>6} {'failed':>6} {'resubmits':>9} {'lines':>7} "
        f"{'exactly once':>13} {'jobs':>5} {'refused':>8} {'wall':>8} {'items/s':>9}"
    )
    for name in args.scenarios:
        print(await _one(name, SCENARIOS[name], args))


if __name__ == "__main__":
    asyncio.run(main())
