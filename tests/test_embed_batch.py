"""Specification of embeddings through OpenAI's Batch API, against the fake server.

Real ``OpenAIEmbeddings`` and the real openai client talk HTTP to the fake server;
job timelines run on a :class:`FakeClock` shared by the server and the polling,
so no test waits in real time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import openai
import pytest

from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing._fakeserver._embeddings import fake_vector

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
