"""The main job on the embedded default: no API key, a FAKE chat model.

300 topics go through ``prompt | model | parser`` on a fake chat model with
realistic latency (50-150 ms) and a few injected failures (about 3% of calls).
You see the progress bar, the summary, the failed rows, and ``retry_failed()``
re-running only those rows.

Run: make demo            (or: python examples/demo.py [--items 300] [--real])
With OPENAI_API_KEY set, ``--real`` runs the same job on gpt-4o-mini instead.
"""

from __future__ import annotations

import argparse
import os

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_batchkit import batchkit, concurrency_for_size
from langchain_batchkit.testing import FakeChatModel


def _model(real: bool) -> tuple[BaseChatModel, str]:
    if real:
        if not os.environ.get("OPENAI_API_KEY"):
            raise SystemExit("--real needs OPENAI_API_KEY in the environment")
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(model="gpt-4o-mini"), "REAL model: gpt-4o-mini"
    fake = FakeChatModel(latency=0.05, jitter=0.1, error_rate=0.03, seed=42)
    return fake, "FAKE chat model (no API key, no network): 50-150 ms latency, ~3% failures"


def main() -> None:
    parser = argparse.ArgumentParser(description="langchain-batchkit demo")
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--real", action="store_true", help="use OpenAI (needs OPENAI_API_KEY)")
    args = parser.parse_args()

    llm, label = _model(args.real)
    print(f"== {label}")
    if not args.real and os.environ.get("OPENAI_API_KEY"):
        print("   (OPENAI_API_KEY is set: `python examples/demo.py --real` uses the real model)")
    chain = (
        ChatPromptTemplate.from_template("Write a one-line tagline about {topic}.")
        | llm
        | StrOutputParser()
    )
    topics = [{"topic": f"topic #{i}"} for i in range(args.items)]

    kit = batchkit(chain, desc="taglines")  # max_concurrency="auto"
    print(f"== {len(topics)} items, auto concurrency {concurrency_for_size(len(topics))}")
    results = kit.batch(topics)

    print(f"\n== summary: {results.summary()}")
    print(f"== failed rows ({len(results.failed)}):")
    for r in results.failed[:10]:
        print(f"   [{r.index:3}] {r.input['topic']!r:16} {r.error}")
    print(f"== first outputs: {results.outputs[:3]}")

    print("\n== retry_failed(): re-running only the failed rows")
    results = results.retry_failed()
    print(f"== after retry: {results.summary()}")
    still = results.failed
    print(f"== still failing: {[r.index for r in still] or 'none'}")


if __name__ == "__main__":
    main()
