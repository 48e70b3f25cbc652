"""Specification of embeddings through OpenAI's Batch API, against the fake server.

Real ``OpenAIEmbeddings`` and the real openai client talk HTTP to the fake server;
job timelines run on a :class:`FakeClock` shared by the server and the polling,
so no test waits in real time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr

from langchain_batchkit import BatchAPIOptions, MicroBatcher, RateLimit, paced_embeddings
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit.costs import CallUsage, PriceBook
from langchain_batchkit.embeddings import BatchEmbeddings, EmbeddingStore, EmbedLimits
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing._fakeserver._embeddings import fake_vector
from tests.clock_support import held

if TYPE_CHECKING:
    from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

API_KEY = "sk-test"
MODEL = "text-embedding-3-small"
DIMS = 8


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server_on(fake_openai_server_factory: FakeServerFactory, clock: FakeClock) -> Any:
    """Start a fake server with small vectors, its Batch API timeline on the test's clock."""

    def start(**options: Any) -> FakeOpenAIServer:
        options.setdefault("embedding_dimensions", DIMS)
        return fake_openai_server_factory(FakeServerConfig(clock=clock, **options))

    return start


@pytest.fixture
def openai_client() -> Iterator[Callable[[FakeOpenAIServer], openai.OpenAI]]:
    clients: list[openai.OpenAI] = []

    def make(server: FakeOpenAIServer) -> openai.OpenAI:
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


class Crash(BaseException):
    """Stands for the process dying at some point of a run (not an error to handle)."""


def embeddings_for(server: FakeOpenAIServer, **options: Any) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        model=MODEL,
        base_url=server.base_url,
        api_key=SecretStr(API_KEY),
        max_retries=0,
        check_embedding_ctx_length=False,
        **options,
    )


def options_on(clock: FakeClock, **options: Any) -> BatchAPIOptions:
    options.setdefault("poll_initial_wait", 10.0)
    return BatchAPIOptions(clock=clock, **options)


def texts(n: int) -> list[str]:
    return [f"text number {i}" for i in range(n)]


def input_files(client: openai.OpenAI) -> list[list[dict[str, Any]]]:
    """Every uploaded batch input file, oldest first, as parsed lines."""
    files = sorted(client.files.list(purpose="batch"), key=lambda f: f.id)
    return [[json.loads(x) for x in client.files.content(f.id).text.splitlines()] for f in files]


def line(custom_id: str, texts: list[str], **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": MODEL, "input": texts, **body},
    }


# --------------------------------------------------------------------------- fake server


def test_the_fake_batch_endpoint_answers_embedding_lines_with_the_online_vectors_and_usage(
    server_on: Any, openai_client: Any
) -> None:
    server = server_on(reject_prompts=("FORBIDDEN",))
    client = openai_client(server)
    lines = [line("a", ["one", "two"]), line("b", ["FORBIDDEN text"]), line("c", [""])]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
    )

    done = client.batches.retrieve(batch.id)

    assert done.status == "completed"
    assert done.output_file_id is not None and done.error_file_id is not None
    [ok] = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    body = ok["response"]["body"]
    assert ok["custom_id"] == "a"
    assert [d["embedding"] for d in body["data"]] == [fake_vector(t, DIMS) for t in ("one", "two")]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    errors = {
        r["custom_id"]: r["response"]
        for r in map(json.loads, client.files.content(done.error_file_id).text.splitlines())
    }
    assert {cid: r["status_code"] for cid, r in errors.items()} == {"b": 400, "c": 400}
    assert errors["b"]["body"]["error"]["code"] == "rejected_prompt"
    assert done.usage is not None and done.usage.input_tokens == body["usage"]["prompt_tokens"]


# --------------------------------------------------------------------------- BatchEmbeddings


async def test_each_text_is_one_line_and_its_vector_lands_in_the_store_at_the_batch_price(
    server_on: Any, clock: FakeClock, openai_client: Any
) -> None:
    server = server_on(batch_completion_delay=60.0)
    batch = BatchEmbeddings(embeddings_for(server), options=options_on(clock))

    report = await batch.arun(texts(5))

    assert (report.texts, report.embedded, report.failed, report.requests) == (5, 5, 0, 5)
    assert [report.store.get(str(i)) for i in range(5)] == [
        pytest.approx(fake_vector(t, DIMS), abs=1e-6) for t in texts(5)
    ]
    [lines] = input_files(openai_client(server))
    assert [x["custom_id"] for x in lines] == [f"{i}-1" for i in range(5)]
    assert {x["url"] for x in lines} == {"/v1/embeddings"}
    assert [x["body"]["input"] for x in lines] == [[t] for t in texts(5)]
    assert server.stats().embedding_requests == 0  # nothing went to the online endpoint
    assert report.tokens > 0
    book = PriceBook()
    full = book.cost(CallUsage(input_tokens=report.tokens), MODEL, provider="openai")
    half = book.cost(CallUsage(input_tokens=report.tokens), MODEL, provider="openai", tier="batch")
    assert full is not None and half is not None and half < full
    assert report.cost == pytest.approx(half)


def test_the_sync_run_fills_a_checkpoint_that_a_second_run_resumes_without_sending(
    server_on: Any, clock: FakeClock, tmp_path: Path
) -> None:
    server = server_on()
    checkpoint = str(tmp_path / "vectors.sqlite")
    batch = BatchEmbeddings(embeddings_for(server), options=options_on(clock))

    first = batch.run(texts(4), checkpoint=checkpoint, key=lambda t: t.split()[-1])
    again = batch.run(texts(4), checkpoint=checkpoint, key=lambda t: t.split()[-1])

    assert (first.embedded, again.embedded, again.resumed) == (4, 0, 4)
    assert server.stats().batches_created == 1
    store = EmbeddingStore(checkpoint)
    assert store.get("3") == pytest.approx(fake_vector("text number 3", DIMS), abs=1e-6)


async def test_jobs_are_split_at_the_per_job_request_limit(
    server_on: Any, clock: FakeClock
) -> None:
    server = server_on()
    batch = BatchEmbeddings(
        embeddings_for(server), options=options_on(clock, max_requests_per_job=2)
    )

    report = await batch.arun(texts(5))

    assert report.embedded == 5
    assert server.stats().batches_created == 3


async def test_a_refused_or_too_long_text_fails_alone(server_on: Any, clock: FakeClock) -> None:
    server = server_on(reject_prompts=("FORBIDDEN",))
    batch = BatchEmbeddings(
        embeddings_for(server),
        options=options_on(clock),
        limits=EmbedLimits(max_input_tokens=20),
    )
    inputs = ["fine", "FORBIDDEN words", "long " * 100, "also fine"]

    report = await batch.arun(inputs)

    assert (report.embedded, report.failed) == (2, 2)
    assert {f.index: f.kind for f in report.failures} == {
        1: "BatchRequestError",
        2: "TextTooLong",
    }
    assert report.requests == 3  # the too-long text was never sent
    assert {f.key for f in report.store.failures()} == {"1", "2"}


async def test_lines_that_failed_on_the_server_are_resubmitted_until_embedded(
    server_on: Any, clock: FakeClock, openai_client: Any
) -> None:
    server = server_on(batch_line_error_rate=0.5)
    batch = BatchEmbeddings(embeddings_for(server), options=options_on(clock, max_resubmits=8))

    report = await batch.arun(texts(6))

    assert (report.embedded, report.failed) == (6, 0)
    assert report.retries > 0 and report.requests == 6 + report.retries
    files = input_files(openai_client(server))
    assert len(files) == server.stats().batches_created > 1
    assert len(files[1]) < 6  # only the failed lines went again


async def test_a_restarted_run_resumes_its_jobs_from_the_state_file(
    server_on: Any, clock: FakeClock, tmp_path: Path
) -> None:
    server = server_on(batch_completion_delay=100.0)
    state, checkpoint = tmp_path / "jobs.sqlite", str(tmp_path / "vectors.sqlite")

    async def crash(seconds: float) -> None:
        raise Crash("the process died while waiting")

    first = BatchEmbeddings(
        embeddings_for(server),
        options=BatchAPIOptions(sleep=crash, clock=clock, max_requests_per_job=3),
        state_path=state,
    )
    with pytest.raises(Crash):
        await first.arun(texts(6), checkpoint=checkpoint)
    second = BatchEmbeddings(
        embeddings_for(server), options=options_on(clock, max_requests_per_job=3), state_path=state
    )
    report = await second.arun(texts(6), checkpoint=checkpoint)

    assert (report.embedded, report.failed) == (6, 0)
    assert server.stats().batches_created == 2


async def test_cancel_fails_the_texts_whose_job_did_not_finish(
    server_on: Any, clock: FakeClock
) -> None:
    server = server_on(batch_completion_delay=100.0, batch_cancel_delay=5.0)
    batch: BatchEmbeddings

    async def cancel_then_wait(seconds: float) -> None:
        await batch.acancel()
        await clock.sleep(seconds)

    batch = BatchEmbeddings(
        embeddings_for(server), options=BatchAPIOptions(sleep=cancel_then_wait, clock=clock)
    )

    report = await batch.arun(texts(4))

    assert (report.embedded, report.failed) == (0, 4)
    assert {f.kind for f in report.failures} == {"BatchJobUnfinishedError"}


def test_only_openai_embeddings_are_accepted() -> None:
    from langchain_core.embeddings import FakeEmbeddings

    with pytest.raises(ConfigurationError, match="OpenAIEmbeddings"):
        BatchEmbeddings(FakeEmbeddings(size=4))


# --------------------------------------------------------------------------- MicroBatcher


async def test_single_calls_through_a_microbatcher_are_coalesced_paced_and_fail_alone(
    server_on: Any, clock: FakeClock
) -> None:
    server = server_on(tokenizer="model", tokens_per_minute=200, reject_prompts=("FORBIDDEN",))
    limit = RateLimit(tokens_per_minute=200, headroom=0.6, clock=clock)
    # the HTTP round trip holds the fake time still: the server counts each request
    # at the time the limiter let it go
    paced = paced_embeddings(held(embeddings_for(server), clock), limit)
    inputs = [*texts(60), "FORBIDDEN words", "long " * 9000]

    async with MicroBatcher(paced.aembed_each, max_batch_size=16, clock=clock) as batcher:
        outcomes = await asyncio.gather(
            *(batcher.ainvoke(t) for t in inputs), return_exceptions=True
        )

    assert outcomes[:60] == [pytest.approx(fake_vector(t, DIMS), abs=1e-6) for t in texts(60)]
    assert isinstance(outcomes[60], openai.BadRequestError)
    assert isinstance(outcomes[61], ValueError) and "input limit" in str(outcomes[61])
    stats = server.stats()
    assert stats.rate_limited == 0
    assert stats.embedding_tokens > 200  # more than a minute's budget: it had to wait
    assert clock() >= 60.0
    assert stats.embedding_requests < 20  # coalesced (a refused request split in halves)


def test_a_bar_follows_the_texts_as_jobs_end(
    server_on: Any, clock: FakeClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = server_on()
    batch = BatchEmbeddings(
        embeddings_for(server), options=options_on(clock), state_path=None, progress=True
    )

    report = batch.run(texts(12), checkpoint=tmp_path / "vectors.sqlite")

    assert report.embedded == 12
    shown = capsys.readouterr().err
    assert "batch (text-embedding-3-small)" in shown and "12/12" in shown and "ok=12" in shown
