"""The main job on the embedded default: no API key, a FAKE OpenAI-compatible server.

300 topics go through ``prompt | ChatOpenAI | parser`` where ChatOpenAI is the real
langchain-openai client talking real HTTP to a local fake OpenAI server on
127.0.0.1 (started here, stopped at the end). The server answers after 40-200 ms,
enforces 600 requests/minute with 429 + Retry-After, fails 5% of requests with
5xx, drops 2% of connections, and always rejects prompts mentioning "forbidden".

You see the progress bar (retries in flight included), the summary, the failed
rows (only the always-rejected ones), then ``retry_failed()`` re-running exactly
those rows.

Run: make demo     (or: python examples/demo.py [--items 300] [--real])
With OPENAI_API_KEY set, ``--real`` runs the same job on gpt-4o-mini instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from langchain_batchkit import RateLimit, RetryPolicy, batchkit
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig

FAKE_RPM = 3000


@contextlib.contextmanager
def _model(real: bool) -> Iterator[tuple[ChatOpenAI, str]]:
    if real:
        if not os.environ.get("OPENAI_API_KEY"):
            raise SystemExit("--real needs OPENAI_API_KEY in the environment")
        yield ChatOpenAI(model="gpt-4o-mini", max_retries=0), "REAL model: gpt-4o-mini"
        return
    config = FakeServerConfig(
        latency=0.08,
        latency_distribution="lognormal",
        requests_per_minute=FAKE_RPM,
        error_rate_5xx=0.05,
        drop_rate=0.02,
        reject_prompts=frozenset({"forbidden"}),
        seed=42,
    )
    with FakeOpenAIServer(config) as server:
        llm = ChatOpenAI(
            base_url=server.base_url,
            api_key="sk-fake-demo",  # type: ignore[arg-type]
            model="gpt-4o-mini",
            max_retries=0,  # batchkit does the retrying (see README)
            timeout=10,
        )
        yield (
            llm,
            (
                f"FAKE OpenAI-compatible server at {server.base_url} (no API key, no internet): "
                f"{FAKE_RPM} requests/min, 5% 5xx, 2% dropped connections"
            ),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="langchain-batchkit demo")
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--real", action="store_true", help="use OpenAI (needs OPENAI_API_KEY)")
    args = parser.parse_args()

    with _model(args.real) as (llm, label):
        print(f"== {label}")
        if not args.real and os.environ.get("OPENAI_API_KEY"):
            print(
                "   (OPENAI_API_KEY is set: `python examples/demo.py --real` uses the real model)"
            )
        chain = (
            ChatPromptTemplate.from_template("Write a one-line tagline about {topic}.")
            | llm
            | StrOutputParser()
        )
        topics = [
            {"topic": f"forbidden topic #{i}" if i % 97 == 13 else f"topic #{i}"}
            for i in range(args.items)
        ]
        limit = RateLimit(requests_per_minute=FAKE_RPM)
        kit = batchkit(
            chain,
            rate_limit=limit,
            retry=RetryPolicy(max_attempts=5, initial_backoff=0.2),
            desc="taglines",
        )  # max_concurrency="auto"
        print(f"== {len(topics)} items, max_concurrency='auto', RateLimit({FAKE_RPM} rpm)")
        results = kit.batch(topics)

        print(f"\n== summary: {results.summary()}")
        retried = [r for r in results if r.attempts > 1]
        print(f"== {len(retried)} items needed a retry (5xx / dropped connection), all kept")
        print(f"== limiter: {limit.stats()}")
        print(f"== failed rows ({len(results.failed)}):")
        for r in results.failed[:10]:
            print(f"   [{r.index:3}] {r.input['topic']!r:24} {r.error}"[:150])
        print(f"== first outputs: {results.outputs[:2]}")

        print("\n== retry_failed(): re-running only the failed rows")
        again = results.retry_failed()
        print(f"== after retry: {again.summary()}")
        print(f"== still failing (always rejected): {[r.index for r in again.failed] or 'none'}")


if __name__ == "__main__":
    main()
