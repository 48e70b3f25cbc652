"""embed_texts / aembed_texts: per-text results, packing, pacing, retries, resume, into=, exports.

Over HTTP with the real ``OpenAIEmbeddings`` against the fake server, both drivers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import OpenAIEmbeddings

from langchain_batchkit import (
    CheckpointError,
    RateLimit,
    RetryPolicy,
    aembed_texts,
    embed_texts,
    paced_embeddings,
)
from langchain_batchkit.embeddings import EmbeddingStore, EmbedLimits, EmbedReport
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing._fakeserver._embeddings import fake_vector
from langchain_batchkit.testing.pytest_plugin import FakeServerFactory
from tests.clock_support import held

DIMS = 16


def openai_embeddings(server: FakeOpenAIServer, **kwargs: Any) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        base_url=server.base_url,
        api_key="sk-test",  # type: ignore[arg-type]
        model="text-embedding-3-small",
        check_embedding_ctx_length=False,
        max_retries=0,
        dimensions=DIMS,
        **kwargs,
    )


def no_wait(clock: FakeClock | None = None) -> RetryPolicy:
    return RetryPolicy(clock=clock or FakeClock(), sleep=(clock or FakeClock()).sleep, seed=0)


def texts(n: int, prefix: str = "text") -> list[str]:
    return [f"{prefix} number {i}" for i in range(n)]


def run(driver: str, *args: Any, **kwargs: Any) -> EmbedReport:
    kwargs.setdefault("progress", False)
    if driver == "sync":
        return embed_texts(*args, **kwargs)
    return asyncio.run(aembed_texts(*args, **kwargs))


DRIVERS = pytest.mark.parametrize("driver", ["sync", "async"])


@pytest.fixture
def server(fake_openai_server_factory: FakeServerFactory) -> FakeOpenAIServer:
    return fake_openai_server_factory(FakeServerConfig(tokenizer="model"))


@DRIVERS
def test_every_text_gets_its_own_vector_by_key(server: FakeOpenAIServer, driver: str) -> None:
    corpus = texts(300)
    report = run(driver, openai_embeddings(server), corpus)
    assert (report.texts, report.embedded, report.failed) == (300, 300, 0)
    for i in (0, 137, 299):
        assert report.store.get(str(i)) == pytest.approx(fake_vector(corpus[i], DIMS), abs=1e-6)


@DRIVERS
def test_requests_are_packed_by_count_and_by_tokens(server: FakeOpenAIServer, driver: str) -> None:
    by_count = run(driver, openai_embeddings(server), texts(100), limits=EmbedLimits(max_inputs=30))
    assert by_count.requests == 4
    by_tokens = run(
        driver,
        openai_embeddings(server),
        ["word " * 99 + "x"] * 10,  # 100 tokens each
        limits=EmbedLimits(max_request_tokens=250),
    )
    assert by_tokens.requests == 5
    assert server.stats().embedding_requests == 9


def test_the_client_chunk_size_bounds_a_request(server: FakeOpenAIServer) -> None:
    report = run("sync", openai_embeddings(server, chunk_size=7), texts(21))
    assert report.requests == server.stats().embedding_requests == 3


@DRIVERS
def test_a_text_over_the_input_limit_fails_alone(server: FakeOpenAIServer, driver: str) -> None:
    corpus = texts(5)
    corpus[2] = "word " * 9000
    report = run(driver, openai_embeddings(server), corpus)
    assert (report.embedded, report.failed) == (4, 1)
    assert report.failures[0].key == "2" and report.failures[0].kind == "TextTooLong"
    assert server.stats().responses_by_status.get(400, 0) == 0


def test_a_text_over_the_input_limit_is_truncated_when_asked(server: FakeOpenAIServer) -> None:
    long = "word " * 9000
    report = run(
        "sync",
        openai_embeddings(server),
        [long],
        limits=EmbedLimits.for_model("text-embedding-3-small", too_long="truncate"),
    )
    assert (report.embedded, report.tokens) == (1, 8191)


@DRIVERS
def test_a_request_failing_for_good_is_split_until_the_bad_text_is_found(
    fake_openai_server_factory: FakeServerFactory, driver: str
) -> None:
    config = FakeServerConfig(reject_prompts=frozenset({"poison"}))
    server = fake_openai_server_factory(config)
    corpus = texts(64)
    corpus[41] = "a poison text"
    report = run(driver, openai_embeddings(server), corpus)
    assert (report.embedded, report.failed) == (63, 1)
    assert report.failures[0].key == "41" and "poison" in report.failures[0].message
    assert report.splits == 6  # 64 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1
    assert [f.key for f in report.store.failures()] == ["41"]


@DRIVERS
def test_transient_errors_are_retried_per_request(
    fake_openai_server_factory: FakeServerFactory, driver: str
) -> None:
    config = FakeServerConfig(script={"flaky": ("500", "429", "ok")})
    server = fake_openai_server_factory(config)
    report = run(driver, openai_embeddings(server), ["a flaky text", "b"], retry=no_wait())
    assert (report.embedded, report.retries, report.requests) == (2, 2, 3)


def test_requests_are_paced_by_tokens_so_the_provider_never_says_429(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    clock = FakeClock()
    config = FakeServerConfig(tokenizer="model", tokens_per_minute=2000, clock=clock)
    server = fake_openai_server_factory(config)
    # The limiter may spend 10 s of budget at once on top of a window's rate: 0.8 of
    # the limit keeps that first burst inside the provider's first window.
    limit = RateLimit(tokens_per_minute=2000, headroom=0.8, clock=clock)
    report = run(
        "async",
        held(openai_embeddings(server), clock),  # see tests/clock_support.py
        texts(600),  # 3,600 tokens: more than one window's worth
        rate_limit=limit,
        limits=EmbedLimits(max_inputs=50),
        retry=no_wait(clock),
    )
    assert report.embedded == 600
    assert server.stats().rate_limited == 0
    assert limit.stats().requests == report.requests


def test_the_sync_driver_enters_the_limiter_once_per_request(server: FakeOpenAIServer) -> None:
    limit = RateLimit(requests_per_minute=1_000_000, tokens_per_minute=1_000_000)
    report = run("sync", openai_embeddings(server), texts(100), rate_limit=limit,
                 limits=EmbedLimits(max_inputs=10))  # fmt: skip
    assert limit.stats().requests == report.requests == 10
    assert limit.stats().max_in_flight <= 8


def test_costs_come_from_the_price_database_split_by_tokens(server: FakeOpenAIServer) -> None:
    report = run("sync", openai_embeddings(server), texts(10))
    assert report.cost == pytest.approx(report.tokens * 0.02 / 1_000_000)


@DRIVERS
def test_a_resumed_run_sends_only_what_is_missing(
    server: FakeOpenAIServer, tmp_path: Path, driver: str
) -> None:
    path = str(tmp_path / "embed.sqlite")
    first = run(driver, openai_embeddings(server), texts(50), checkpoint=path)
    before = server.stats().embedded_inputs
    again = run(driver, openai_embeddings(server), texts(80), checkpoint=path)
    assert (first.embedded, again.resumed, again.embedded) == (50, 50, 30)
    assert server.stats().embedded_inputs - before == 30
    assert len(again.store) == 80


def test_a_checkpoint_of_another_model_is_refused(server: FakeOpenAIServer, tmp_path: Path) -> None:
    path = str(tmp_path / "embed.sqlite")
    run("sync", openai_embeddings(server), texts(3), checkpoint=path)
    other = openai_embeddings(server)
    other.model = "text-embedding-3-large"
    with pytest.raises(CheckpointError, match="text-embedding-3-small"):
        run("sync", other, texts(3), checkpoint=path)


class CountingStore(InMemoryVectorStore):
    """Counts add calls per id, and crashes after ``crash_after`` batches when told to."""

    def __init__(self, embedding: Embeddings, crash_after: int | None = None) -> None:
        super().__init__(embedding)
        self.calls: dict[str, int] = {}
        self.batches = 0
        self.crash_after = crash_after

    def add_documents(
        self, documents: list[Document], ids: list[str] | None = None, **kwargs: Any
    ) -> list[str]:
        ids = super().add_documents(documents, ids=ids, **kwargs)
        self._count(ids)
        return ids

    async def aadd_documents(
        self, documents: list[Document], ids: list[str] | None = None, **kwargs: Any
    ) -> list[str]:
        ids = await super().aadd_documents(documents, ids=ids, **kwargs)
        self._count(ids)
        return ids

    def _count(self, ids: list[str]) -> None:
        for i in ids:
            self.calls[i] = self.calls.get(i, 0) + 1
        self.batches += 1
        if self.crash_after is not None and self.batches == self.crash_after:
            raise RuntimeError("crash after an add")


@DRIVERS
def test_into_adds_every_text_once_across_a_crash_and_a_resume(
    server: FakeOpenAIServer, tmp_path: Path, driver: str
) -> None:
    path = str(tmp_path / "embed.sqlite")
    records = [{"id": f"doc-{i}", "text": f"chunk {i}", "page": i} for i in range(100)]
    store = CountingStore(paced_embeddings(openai_embeddings(server), None), crash_after=3)
    options: dict[str, Any] = {
        "checkpoint": path,
        "key": lambda r: r["id"],
        "into": store,
        "add_batch_size": 10,
        "limits": EmbedLimits(max_inputs=20),
    }
    with pytest.raises(RuntimeError, match="crash"):
        run(driver, openai_embeddings(server), records, **options)
    sent = server.stats().embedded_inputs
    store.crash_after = None
    report = run(driver, openai_embeddings(server), records, **options)
    assert len(store.store) == 100
    assert report.resumed + report.embedded == 100
    assert server.stats().embedded_inputs == sent + report.embedded  # add re-embeds nothing
    assert sorted(store.calls.values()) == [1] * 90 + [2] * 10  # the batch the crash cut off
    assert store.get_by_ids(["doc-7"])[0].metadata == {"id": "doc-7", "page": 7}
    assert store.store["doc-7"]["vector"] == pytest.approx(fake_vector("chunk 7", DIMS), abs=1e-6)


def test_exports_stream_every_vector_in_one_order(server: FakeOpenAIServer, tmp_path: Path) -> None:
    report = run("sync", openai_embeddings(server), texts(25), checkpoint=str(tmp_path / "e.db"))
    store = report.store
    keys = list(store.keys())
    matrix = store.to_numpy(tmp_path / "v.npy")
    assert matrix.shape == (25, DIMS) and matrix.dtype == np.float32
    assert np.allclose(np.load(tmp_path / "v.npy"), matrix)
    assert store.to_parquet(tmp_path / "v.parquet", batch_size=10) == 25
    table = pq.read_table(tmp_path / "v.parquet")
    assert table.column("key").to_pylist() == keys
    assert np.allclose(np.array(table.column("vector").to_pylist()), matrix)
    assert [b.num_rows for b in store.to_arrow(batch_size=10)] == [10, 10, 5]
    reopened = EmbeddingStore(tmp_path / "e.db")
    assert reopened.get(keys[3]) == pytest.approx(list(matrix[3]))


class CountingEmbeddings(Embeddings):
    """In-process vectors; records how far the input was read at each request."""

    def __init__(self, read: Iterator[int]) -> None:
        self.read = read
        self.lead: list[int] = []
        self.done = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.lead.append(next(self.read) - self.done)
        self.done += len(texts)
        return [[float(len(t)), 1.0] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def test_a_lazy_input_is_read_only_as_far_as_requests_need() -> None:
    consumed = [0]

    def corpus() -> Iterator[str]:
        for i in range(20_000):
            consumed[0] = i
            yield f"t{i}"

    model = CountingEmbeddings(iter(lambda: consumed[0], None))
    report = run("sync", model, corpus(), limits=EmbedLimits(max_inputs=100), max_concurrency=2)
    assert report.embedded == 20_000
    assert max(model.lead) <= 2 * 100 + 512 + 100


def test_paced_embeddings_pace_direct_calls_and_runnable_steps(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    clock = FakeClock()
    server = fake_openai_server_factory(
        FakeServerConfig(requests_per_minute=2, window_seconds=60, clock=clock)
    )
    paced = paced_embeddings(
        openai_embeddings(server), RateLimit(requests_per_minute=2, burst=1, clock=clock)
    )
    paced.embed_documents(["a"])
    RunnableLambda(paced.embed_documents).invoke(["b"])
    paced.embed_query("c")
    assert server.stats().rate_limited == 0
    assert clock() - 1000.0 >= 59  # the third request waited for the window


async def test_paced_embeddings_pace_async_calls(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    clock = FakeClock()
    server = fake_openai_server_factory(
        FakeServerConfig(requests_per_minute=1, window_seconds=60, clock=clock)
    )
    paced = paced_embeddings(
        openai_embeddings(server), RateLimit(requests_per_minute=1, clock=clock)
    )
    await paced.aembed_documents(["a"])
    await paced.aembed_query("b")
    assert server.stats().rate_limited == 0
