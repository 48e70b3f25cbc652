"""Specification of the fake server's Azure OpenAI routes, driven by ``openai.AzureOpenAI``.

The client is pointed at ``azure_endpoint=server.url``: it adds ``/openai`` to every
route, an ``api-version`` to every query and the ``api-key`` header (or a bearer
token), exactly as against a real Azure OpenAI resource. Batch timelines run on a
:class:`FakeClock`: tests advance it and retrieve, and never sleep.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import httpx
import openai
import pytest

from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing._fakeserver._azure_answers import deployed_model

if TYPE_CHECKING:  # importing the plugin here would run before pytest can register it
    from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

#: Built at run time: no key-shaped literal is tracked (the fake takes any credential).
API_KEY: Final = "-".join(("fake", "azure", "credential"))
API_VERSION: Final = "2025-04-01-preview"
DEPLOYMENT: Final = "gpt-4o-mini-batch"
ENDPOINT: Final = "/chat/completions"

Record = dict[str, Any]
MakeClient = Callable[..., openai.AzureOpenAI]


def line(custom_id: str, prompt: str, **overrides: Any) -> Record:
    body: Record = {"model": DEPLOYMENT, "messages": [{"role": "user", "content": prompt}]}
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body, **overrides}


def jsonl(lines: Sequence[Record]) -> bytes:
    return "\n".join(json.dumps(x) for x in lines).encode()


def submit(client: openai.AzureOpenAI, lines: Sequence[Record], endpoint: str = ENDPOINT) -> Any:
    uploaded = client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )


def records(client: openai.AzureOpenAI, file_id: str | None) -> list[Record]:
    assert file_id is not None
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(fake_openai_server_factory: FakeServerFactory, clock: FakeClock) -> FakeOpenAIServer:
    return fake_openai_server_factory(FakeServerConfig(clock=clock, batch_completion_delay=10.0))


@pytest.fixture
def make_client(server: FakeOpenAIServer) -> Iterator[MakeClient]:
    """Sync Azure clients on the server (``max_retries=0``), closed after the test."""
    clients: list[openai.AzureOpenAI] = []

    def make(**options: Any) -> openai.AzureOpenAI:
        if "azure_ad_token_provider" not in options:
            options.setdefault("api_key", API_KEY)
        options.setdefault("api_version", API_VERSION)
        client = openai.AzureOpenAI(azure_endpoint=server.url, max_retries=0, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# --------------------------------------------------------------------------- files


def test_files_round_trip_under_the_openai_routes(make_client: MakeClient) -> None:
    client = make_client()
    data = jsonl([line("a", "hello")])

    uploaded = client.files.create(file=("input.jsonl", data), purpose="batch")

    assert (uploaded.object, uploaded.purpose, uploaded.bytes) == ("file", "batch", len(data))
    assert client.files.retrieve(uploaded.id) == uploaded
    assert client.files.content(uploaded.id).content == data
    assert [f.id for f in client.files.list(purpose="batch")] == [uploaded.id]
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


# --------------------------------------------------------------------------- batches


def test_a_chat_batch_runs_on_the_clock_and_answers_as_the_deployed_model(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client()
    batch = submit(client, [line(f"item-{i}", f"prompt {i}") for i in range(4)])
    assert (batch.status, batch.endpoint) == ("validating", ENDPOINT)

    assert client.batches.retrieve(batch.id).status == "in_progress"
    clock.advance(10.0)
    done = client.batches.retrieve(batch.id)

    assert done.status == "completed"
    output = {r["custom_id"]: r["response"]["body"] for r in records(client, done.output_file_id)}
    assert sorted(output) == [f"item-{i}" for i in range(4)]
    body = output["item-2"]
    assert body["model"] == "gpt-4o-mini"  # the model behind the deployment
    assert body["choices"][0]["message"]["content"] == "echo: prompt 2"
    assert body["choices"][0]["content_filter_results"]["hate"] == {
        "filtered": False,
        "severity": "safe",
    }
    assert body["prompt_filter_results"][0]["prompt_index"] == 0


def test_batches_are_listed_and_an_in_progress_one_is_cancelled(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client()
    first = submit(client, [line("a", "one")])
    second = submit(client, [line(f"b{i}", "two") for i in range(10)])
    clock.advance(3.0)

    listed = [b.id for b in client.batches.list()]
    cancelling = client.batches.cancel(second.id)
    clock.advance(20.0)
    cancelled = client.batches.retrieve(second.id)

    assert listed == [second.id, first.id]
    assert cancelling.status == "cancelling"
    assert cancelled.status == "cancelled"
    assert cancelled.request_counts is not None and cancelled.request_counts.completed == 3
    assert len(records(client, cancelled.output_file_id)) == 3


def test_a_line_whose_url_is_not_the_batch_endpoint_fails_the_batch(
    make_client: MakeClient,
) -> None:
    client = make_client()

    batch = submit(client, [line("a", "x", url="/v1/chat/completions")])

    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors.data is not None
    assert [e.code for e in failed.errors.data] == ["url_mismatch"]


def test_openais_endpoint_name_is_refused_on_azure_and_azures_on_openai(
    server: FakeOpenAIServer, make_client: MakeClient
) -> None:
    with pytest.raises(openai.BadRequestError, match="/v1/chat/completions"):
        submit(make_client(), [line("a", "x")], endpoint="/v1/chat/completions")
    with openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as plain:
        uploaded = plain.files.create(file=("in.jsonl", jsonl([line("a", "x")])), purpose="batch")
        with pytest.raises(openai.BadRequestError, match="Invalid endpoint '/chat/completions'"):
            plain.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,  # type: ignore[arg-type]
                completion_window="24h",
            )


# --------------------------------------------------------------------------- api-version, keys


def test_a_request_without_api_version_gets_400(server: FakeOpenAIServer) -> None:
    # The SDK always adds it; a client of the plain OpenAI kind sends none.
    with (
        openai.OpenAI(base_url=f"{server.url}/openai", api_key=API_KEY, max_retries=0) as plain,
        pytest.raises(openai.BadRequestError, match=r"api-version query parameter") as caught,
    ):
        plain.batches.list()

    assert caught.value.code == "MissingApiVersionParameter"


def test_an_undated_api_version_gets_400(make_client: MakeClient) -> None:
    with pytest.raises(openai.BadRequestError, match="not a dated version"):
        make_client(api_version="latest").files.list()


@pytest.mark.parametrize(
    "headers",
    [{}, {"api-key": ""}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}],
    ids=["none", "empty-key", "basic", "empty-bearer"],
)
def test_a_request_without_credentials_gets_401(
    server: FakeOpenAIServer, headers: dict[str, str]
) -> None:
    answer = httpx.get(f"{server.url}/openai/batches?api-version={API_VERSION}", headers=headers)

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "401"


def test_an_entra_id_token_is_accepted_as_a_bearer(make_client: MakeClient) -> None:
    issued: list[str] = []

    def token() -> str:
        issued.append("token")
        return "-".join(("entra", "token"))

    client = make_client(azure_ad_token_provider=token)

    assert client.batches.list().data == []
    assert issued == ["token"]


def test_credentials_never_reach_the_logs(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="langchain_batchkit")
    client = make_client()

    submit(client, [line("a", "x")])

    assert "POST /openai/batches -> 200" in caplog.text
    assert API_KEY not in caplog.text


# --------------------------------------------------------------------------- online


def test_a_deployment_answers_online_as_its_model_with_filter_results(
    make_client: MakeClient,
) -> None:
    client = make_client()

    answer = client.chat.completions.create(
        model=DEPLOYMENT, messages=[{"role": "user", "content": "hi"}]
    )
    raw = answer.model_dump()

    assert answer.model == "gpt-4o-mini"
    assert answer.choices[0].message.content == "echo: hi"
    assert raw["choices"][0]["content_filter_results"]["violence"]["severity"] == "safe"
    assert raw["prompt_filter_results"][0]["prompt_index"] == 0


def test_a_deployment_named_for_no_model_answers_under_its_own_name() -> None:
    models = ("gpt-4o", "gpt-4o-mini")

    assert deployed_model("gpt-4o-mini", models) == "gpt-4o-mini"
    assert deployed_model("gpt-4o-mini-batch", models) == "gpt-4o-mini"
    assert deployed_model("gpt-4o-batch", models) == "gpt-4o"
    assert deployed_model("gpt-4omini", models) == "gpt-4omini"
    assert deployed_model("summarizer", models) == "summarizer"
