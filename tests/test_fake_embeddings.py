"""The fake server's ``POST /v1/embeddings``, driven by the real ``OpenAIEmbeddings`` over HTTP."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest
from langchain_openai import OpenAIEmbeddings

from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing._fakeserver._embeddings import fake_vector
from langchain_batchkit.testing.pytest_plugin import FakeServerFactory


def embeddings(server: FakeOpenAIServer, **kwargs: Any) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        base_url=server.base_url,
        api_key="sk-test",  # type: ignore[arg-type]
        model="text-embedding-3-small",
        check_embedding_ctx_length=False,
        max_retries=0,
        **kwargs,
    )


def post(server: FakeOpenAIServer, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{server.base_url}/embeddings",
        data=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_vectors_are_deterministic_per_text_and_honour_dimensions(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory()
    vectors = embeddings(server, dimensions=64).embed_documents(["alpha", "beta", "alpha"])
    assert [len(v) for v in vectors] == [64, 64, 64]
    assert vectors[0] == pytest.approx(fake_vector("alpha", 64), abs=1e-7)
    assert vectors[0] == vectors[2] != vectors[1]


def test_the_default_dimensions_come_from_the_config(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(embedding_dimensions=16))
    assert len(embeddings(server).embed_query("q")) == 16


def test_float_and_base64_answers_carry_the_same_vector(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(embedding_dimensions=8))
    status, body = post(server, {"model": "m", "input": ["x"], "encoding_format": "float"})
    assert status == 200
    assert body["data"][0]["embedding"] == pytest.approx(fake_vector("x", 8))
    via_sdk = embeddings(server).embed_documents(["x"])  # the SDK asks for base64
    assert via_sdk[0] == pytest.approx(fake_vector("x", 8), abs=1e-7)


def test_usage_counts_the_inputs_tokens_with_the_model_tokenizer(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(tokenizer="model"))
    status, body = post(server, {"model": "text-embedding-3-small", "input": ["hello world", "a"]})
    assert status == 200
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    stats = server.stats()
    assert (stats.embedding_requests, stats.embedded_inputs, stats.embedding_tokens) == (1, 2, 3)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"model": "m", "input": ["x"] * 2049}, None),
        ({"model": "m", "input": ["x" * 4 * 8192]}, "context_length_exceeded"),
        ({"model": "m", "input": ["x" * 4 * 8000] * 38}, "max_tokens_per_request"),
        ({"model": "m", "input": []}, None),
        ({"model": "m", "input": ["ok"], "dimensions": 0}, None),
    ],
)
def test_requests_over_the_api_limits_get_a_400(
    fake_openai_server_factory: FakeServerFactory, payload: dict[str, Any], code: str | None
) -> None:
    server = fake_openai_server_factory()
    status, body = post(server, payload)
    assert status == 400
    assert body["error"]["code"] == code


def test_a_rejected_input_fails_its_whole_request(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(reject_prompts=frozenset({"poison"})))
    with pytest.raises(openai.BadRequestError, match="poison"):
        embeddings(server).embed_documents(["fine", "a poison text"])


def test_the_token_limit_answers_429_with_retry_after(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    clock = FakeClock()
    server = fake_openai_server_factory(
        FakeServerConfig(tokens_per_minute=10, window_seconds=1.0, clock=clock)
    )
    model = embeddings(server)
    model.embed_documents(["x" * 32])  # 8 tokens
    with pytest.raises(openai.RateLimitError) as caught:
        model.embed_documents(["x" * 16])  # 4 more would make 12
    assert caught.value.response.headers["retry-after"] == "1"
    clock.advance(1.0)
    assert len(model.embed_documents(["x" * 16])) == 1
    assert server.stats().rate_limited == 1


def test_scripted_faults_apply_to_embedding_requests(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(script={"flaky": ("500", "ok")}))
    model = embeddings(server)
    with pytest.raises(openai.InternalServerError):
        model.embed_documents(["flaky one"])
    assert len(model.embed_documents(["flaky one"])) == 1


def test_async_clients_get_the_same_vectors(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(embedding_dimensions=32))
    model = embeddings(server)
    assert asyncio.run(model.aembed_documents(["z"])) == model.embed_documents(["z"])
