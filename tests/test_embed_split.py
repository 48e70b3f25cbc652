"""embed_texts with ``too_long="split"``: a text over the input limit becomes one vector.

Over HTTP with the real ``OpenAIEmbeddings`` against the fake server, both drivers.
The expected chunks are cut here with the tokenizer itself, the expected vector
is the fake server's vectors of those chunks averaged by tokens and normalised.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from langchain_openai import OpenAIEmbeddings

from langchain_batchkit import ConfigurationError, paced_embeddings
from langchain_batchkit._embed_pack import cut_text
from langchain_batchkit._tokenize import _encoding_for, count_text
from langchain_batchkit.embeddings import BatchEmbeddings, EmbedLimits
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing._fakeserver._embeddings import fake_vector
from langchain_batchkit.testing.pytest_plugin import FakeServerFactory
from tests.test_embed import DIMS, DRIVERS, CountingStore, openai_embeddings, run

MODEL = "text-embedding-3-small"
LIMIT = 100
SPLIT = EmbedLimits(max_input_tokens=LIMIT, too_long="split")
LONG = " ".join(f"w{i}" for i in range(315))  # 630 tokens: 6 chunks of 100 and one of 30


def chunks_of(text: str) -> list[str]:
    encoding = _encoding_for(MODEL)
    ids = encoding.encode_ordinary(text)
    return [str(encoding.decode(ids[i : i + LIMIT])) for i in range(0, len(ids), LIMIT)]


def weighted_mean(chunks: list[str]) -> list[float]:
    total = [0.0] * DIMS
    for chunk in chunks:
        weight = count_text(chunk, MODEL).tokens
        total = [t + weight * x for t, x in zip(total, fake_vector(chunk, DIMS), strict=True)]
    norm = math.sqrt(sum(x * x for x in total))
    return [x / norm for x in total]


@pytest.fixture
def server(fake_openai_server_factory: FakeServerFactory) -> FakeOpenAIServer:
    return fake_openai_server_factory(FakeServerConfig(tokenizer="model"))


@DRIVERS
def test_a_long_text_is_sent_as_chunks_that_each_fit(server: FakeOpenAIServer, driver: str) -> None:
    chunks = chunks_of(LONG)
    report = run(driver, openai_embeddings(server), ["before", LONG, "after"], limits=SPLIT)
    assert len(chunks) == 7 and "".join(chunks) == LONG
    assert server.stats().embedded_inputs == len(chunks) + 2
    assert report.requests == 1  # the chunks are packed with their neighbours
    assert (report.texts, report.embedded, report.failed) == (3, 3, 0)
    assert report.tokens == sum(count_text(c, MODEL).tokens for c in chunks) + 2


@DRIVERS
def test_a_split_text_gets_the_normalised_token_weighted_mean_of_its_chunks(
    server: FakeOpenAIServer, driver: str
) -> None:
    report = run(driver, openai_embeddings(server), ["before", LONG, "after"], limits=SPLIT)
    assert report.store.get("1") == pytest.approx(weighted_mean(chunks_of(LONG)), abs=1e-6)
    assert report.store.get("0") == pytest.approx(fake_vector("before", DIMS), abs=1e-6)
    assert report.store.get("2") == pytest.approx(fake_vector("after", DIMS), abs=1e-6)
    assert sorted(report.store.keys()) == ["0", "1", "2"]  # one row per text


def test_the_model_limit_splits_a_text_over_8191_tokens(server: FakeOpenAIServer) -> None:
    report = run(
        "sync",
        openai_embeddings(server),
        ["word " * 9000],
        limits=EmbedLimits.for_model(MODEL, too_long="split"),
    )
    assert (report.embedded, server.stats().embedded_inputs) == (1, 2)
    assert report.cost == pytest.approx(report.tokens * 0.02 / 1_000_000)


@DRIVERS
def test_a_resumed_run_does_not_send_a_split_text_again(
    server: FakeOpenAIServer, tmp_path: Path, driver: str
) -> None:
    path = str(tmp_path / "embed.sqlite")
    corpus = ["before", LONG, "after"]
    run(driver, openai_embeddings(server), corpus, limits=SPLIT, checkpoint=path)
    sent = server.stats().embedded_inputs
    again = run(driver, openai_embeddings(server), corpus, limits=SPLIT, checkpoint=path)
    assert (again.resumed, again.embedded, again.requests) == (3, 0, 0)
    assert server.stats().embedded_inputs == sent
    assert len(again.store) == 3


@DRIVERS
def test_a_failing_chunk_fails_its_text_once_and_spares_the_neighbours(
    fake_openai_server_factory: FakeServerFactory, driver: str
) -> None:
    server = fake_openai_server_factory(
        FakeServerConfig(tokenizer="model", reject_prompts=frozenset({"poison"}))
    )
    poisoned = LONG + " poison"  # only the last chunk holds it
    report = run(driver, openai_embeddings(server), ["before", poisoned, "after"], limits=SPLIT)
    assert (report.embedded, report.failed) == (2, 1)
    assert [f.key for f in report.failures] == ["1"]
    assert "poison" in report.failures[0].message
    assert report.store.get("1") is None
    assert [f.key for f in report.store.failures()] == ["1"]
    assert report.store.get("2") == pytest.approx(fake_vector("after", DIMS), abs=1e-6)


@DRIVERS
def test_into_adds_a_split_text_once_with_its_whole_text(
    server: FakeOpenAIServer, driver: str
) -> None:
    records = [{"id": "a", "text": "short"}, {"id": "b", "text": LONG, "page": 2}]
    store = CountingStore(paced_embeddings(openai_embeddings(server), None))
    report = run(
        driver,
        openai_embeddings(server),
        records,
        key=lambda r: r["id"],
        into=store,
        limits=SPLIT,
    )
    assert report.added == 2 and store.calls == {"a": 1, "b": 1}
    (document,) = store.get_by_ids(["b"])
    assert document.page_content == LONG and document.metadata == {"id": "b", "page": 2}
    assert store.store["b"]["vector"] == pytest.approx(report.store.get("b"), abs=1e-6)
    assert server.stats().embedded_inputs == len(chunks_of(LONG)) + 1  # add re-embeds nothing


def test_chunks_never_cut_inside_a_character() -> None:
    text = "héllo 日本語 wörld, " * 20
    chunks = cut_text(text, MODEL, EmbedLimits(max_input_tokens=3, too_long="split"))
    assert isinstance(chunks, list) and len(chunks) > 1
    assert "".join(c for c, _ in chunks) == text
    assert all(tokens <= 3 for _, tokens in chunks)


def test_without_a_tokenizer_chunks_are_cut_by_characters_with_a_margin() -> None:
    limits = EmbedLimits(max_input_tokens=100, too_long="split")
    chunks = cut_text("x" * 1000, "local-model", limits)
    assert isinstance(chunks, list)
    assert [len(c) for c, _ in chunks] == [320, 320, 320, 40]  # 80% of 100 tokens at 4 chars


def test_split_needs_an_input_limit() -> None:
    with pytest.raises(ConfigurationError, match="max_input_tokens"):
        EmbedLimits(max_input_tokens=None, too_long="split")
    with pytest.raises(ConfigurationError, match="input limit of 'local-model'"):
        EmbedLimits.for_model("local-model", too_long="split")


def test_batch_embeddings_refuse_split(server: FakeOpenAIServer) -> None:
    embeddings: OpenAIEmbeddings = openai_embeddings(server)
    with pytest.raises(ConfigurationError, match="cannot split"):
        BatchEmbeddings(embeddings, limits=EmbedLimits.for_model(MODEL, too_long="split"))


def test_a_text_whose_every_chunk_fails_is_one_failure(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(
        FakeServerConfig(tokenizer="model", reject_prompts=frozenset({"poison"}))
    )
    report = run("sync", openai_embeddings(server), ["poison " * 300, "fine"], limits=SPLIT)
    assert (report.texts, report.embedded, report.failed) == (2, 1, 1)
    assert [f.key for f in report.failures] == ["0"]
