"""Structured extraction at batch scale: bad answers, re-run against re-asked.

1,000 extraction items through real ``ChatOpenAI(...).with_structured_output(Person,
method="function_calling")`` against the local fake server. 10% of the first answers
fail validation (the four scripted mistakes in turn: a missing field, a wrong type,
truncated JSON, text before the JSON). Three ways:

* **plain**: ``chain.batch(inputs, return_exceptions=True)``; failures stay failures;
* **re-run**: the same prompt again, a second and a third ``chain.batch`` over the
  items still failing (what retrying a parse error as if transient does);
* **re-ask**: ``batchkit(chain, reask=Reask(max_attempts=3))``: the answer and its
  error go back to the model;
* **Batch API re-ask**: ``BatchAPIRunner(chain, reask=Reask(max_attempts=3))``: the
  same, with the first answers in one job and each re-ask round in another (calls
  are the batch lines the server ran; the fake server's batch timeline on a fake clock).

Two models of the model's mistakes (``--repeats``): with ``1`` a failing prompt
makes its mistake once more when asked the same thing again (a deterministic model
at temperature 0 does), with ``0`` the mistake does not come back. In both, the
fake server answers a re-ask that names the mistake validly. Calls are 200 answers
the server sent; tokens are the models' reported usage, summed.

Documents are ``--words`` long (300 by default) and the answers short, as in an
extraction job; a re-ask re-sends the document too, plus the answer and the error.

Usage: python bench/reask.py [--items 1000] [--fail-every 10] [--repeats 1 0] [--words 300]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from langchain_batchkit import BatchAPIOptions, BatchAPIRunner, Reask, batchkit
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig, ScriptedFault

MISTAKES: tuple[ScriptedFault, ...] = (
    "missing_field",
    "wrong_type",
    "truncated_json",
    "text_before_json",
)


class Person(BaseModel):
    name: str
    age: int


def _chain(server: FakeOpenAIServer) -> Any:
    llm = ChatOpenAI(
        base_url=server.base_url,
        api_key="sk-bench",  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
        timeout=10.0,
    )
    return llm.with_structured_output(Person, method="function_calling")


FILLER = "The applicant listed previous employers, addresses and references. "


def _inputs(items: int, fail_every: int, words: int) -> list[str]:
    body = " ".join(FILLER.split() * (words // len(FILLER.split()) + 1))[: words * 7]
    return [
        f"doc-{i} {'bad' if i % fail_every == 0 else 'ok'}\nExtract the person.\n{body}"
        for i in range(items)
    ]


def _answer(prompt: str) -> str:
    """The model's valid extraction: short, whatever the document's length."""
    return json.dumps({"name": prompt.split()[0], "age": len(prompt) % 90})


def _config(inputs: list[str], repeats: int) -> FakeServerConfig:
    bad = [text for text in inputs if text.split("\n")[0].endswith("bad")]
    script = {
        text.split("\n")[0]: (MISTAKES[n % len(MISTAKES)],) * (1 + repeats)
        for n, text in enumerate(bad)
    }
    return FakeServerConfig(structured_answers=True, script=script, response_text=_answer)


def _valid(output: Any) -> bool:
    return isinstance(output, Person)


def plain(server: FakeOpenAIServer, inputs: list[str], usage: Any) -> int:
    outputs = _chain(server).batch(inputs, {"callbacks": [usage]}, return_exceptions=True)
    return sum(map(_valid, outputs))


def rerun(server: FakeOpenAIServer, inputs: list[str], usage: Any) -> int:
    chain = _chain(server)
    pending = list(inputs)
    valid = 0
    for _ in range(3):  # the first run and two re-runs: as many answers as the re-ask allows
        outputs = chain.batch(pending, {"callbacks": [usage]}, return_exceptions=True)
        valid += sum(map(_valid, outputs))
        pending = [text for text, out in zip(pending, outputs, strict=True) if not _valid(out)]
        if not pending:
            break
    return valid


def reask(server: FakeOpenAIServer, inputs: list[str], usage: Any) -> int:
    kit = batchkit(_chain(server), reask=Reask(max_attempts=3), progress=False)
    results = kit.batch(inputs, {"callbacks": [usage]})
    return sum(1 for r in results if _valid(r.output))


def batch_api_reask(server: FakeOpenAIServer, inputs: list[str], usage: Any) -> int:
    """Re-asks as Batch API rounds: one job of first answers, one per re-ask round."""
    clock = FakeClock()
    options = BatchAPIOptions(clock=clock, sleep=clock.sleep)
    runner = BatchAPIRunner(_chain(server), options=options, reask=Reask(max_attempts=3))
    results = runner.run(inputs)
    tokens = [r.usage for r in results if r.usage is not None]
    usage.usage_metadata["gpt-4o-mini"] = {  # the jobs' usage, as the callback would sum it
        "input_tokens": sum(t.input_tokens for t in tokens),
        "output_tokens": sum(t.output_tokens for t in tokens),
    }
    return sum(1 for r in results if _valid(r.output))


WAYS: dict[str, Callable[[FakeOpenAIServer, list[str], Any], int]] = {
    "plain batch": plain,
    "re-run failed": rerun,
    "batchkit re-ask": reask,
    "Batch API re-ask": batch_api_reask,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--fail-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 0])
    parser.add_argument("--words", type=int, default=300, help="words per document")
    args = parser.parse_args()
    inputs = _inputs(args.items, args.fail_every, args.words)
    for repeats in args.repeats:
        print(
            f"\n{args.items} items of ~{args.words} words, {len(_config(inputs, 0).script)} "
            f"first answers invalid; a mistake repeats {repeats} more time(s) on the same prompt"
        )
        print(f"{'way':<18}{'valid':>8}{'calls':>8}{'input tok':>12}{'output tok':>12}")
        for name, way in WAYS.items():
            usage = UsageMetadataCallbackHandler()
            with FakeOpenAIServer(_config(inputs, repeats)) as server:
                valid = way(server, inputs, usage)
                stats = server.stats()
                # online: the answers; Batch API: the lines its jobs ran (not the job calls)
                calls = stats.batch_lines_processed or stats.responses_by_status.get(200, 0)
            totals: dict[str, Any] = dict(next(iter(usage.usage_metadata.values()), {}))
            print(
                f"{name:<18}{valid:>8}{calls:>8}"
                f"{totals.get('input_tokens', 0):>12}{totals.get('output_tokens', 0):>12}"
            )


if __name__ == "__main__":
    main()
