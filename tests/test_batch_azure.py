"""Specification of BatchAPIRunner with AzureChatOpenAI, against the fake server's Azure routes.

Every test points a real ``AzureChatOpenAI`` at the fake server
(``azure_endpoint=server.url``): its ``AsyncAzureOpenAI`` sends files and batches
to ``/openai/...`` with an ``api-version`` and the ``api-key``, as against a real
resource. Job timelines run on the shared ``batch_clock``, so no test waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_openai import AzureChatOpenAI
from pydantic import BaseModel

from langchain_batchkit import BatchAPIOptions, BatchAPIRunner, ConfigurationError
from langchain_batchkit._batch_api import BatchJobUnfinishedError
from langchain_batchkit._batch_api._azure import MAX_REQUESTS, AzureBackend, deployment_of
from langchain_batchkit.costs import CallUsage, Price, PriceBook
from langchain_batchkit.errors import CostWarning
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer
from tests.batch_support import llm_for, options_on, prompts

#: Built at run time: no key-shaped literal is tracked (the fake takes any credential).
API_KEY: Final = "-".join(("fake", "azure", "credential"))
API_VERSION: Final = "2025-04-01-preview"
DEPLOYMENT: Final = "gpt-4o-mini-batch"


class Crash(BaseException):
    """Stands for the process dying at some point of a run (not an error to handle)."""


def azure_llm(server: FakeOpenAIServer, **options: Any) -> AzureChatOpenAI:
    """An AzureChatOpenAI on the fake server's Azure routes, the SDK's own retries off."""
    if not any(k.startswith("azure_ad") for k in options):
        options.setdefault("api_key", API_KEY)
    if "base_url" not in options:
        options.setdefault("azure_endpoint", server.url)
        options.setdefault("azure_deployment", DEPLOYMENT)
    return AzureChatOpenAI(api_version=API_VERSION, max_retries=0, **options)


@pytest.fixture
def azure_client(batch_server_on: Any) -> Iterator[Any]:
    """Sync ``AzureOpenAI`` clients to read back what a server received."""
    clients: list[openai.AzureOpenAI] = []

    def make(server: FakeOpenAIServer) -> openai.AzureOpenAI:
        client = openai.AzureOpenAI(
            azure_endpoint=server.url, api_key=API_KEY, api_version=API_VERSION, max_retries=0
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def input_files(client: openai.AzureOpenAI) -> list[list[dict[str, Any]]]:
    """Every uploaded batch input file, oldest first, as parsed lines."""
    files = sorted(client.files.list(purpose="batch"), key=lambda f: f.id)
    return [[json.loads(x) for x in client.files.content(f.id).text.splitlines()] for f in files]


class Recorder:
    """An ``http_async_client`` hook noting each request's path, api-version and auth."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str | None, bool]] = []

    async def __call__(self, request: Any) -> None:
        url = request.url
        keyed = request.headers.get("api-key") == API_KEY
        self.sent.append((request.method, url.path, url.params.get("api-version"), keyed))


# --------------------------------------------------------------------------- happy path


async def test_a_bare_model_returns_messages_of_the_deployed_model_with_filter_results(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(batch_completion_delay=120.0)
    runner = BatchAPIRunner(azure_llm(server), options=options_on(batch_clock))

    results = await runner.arun(prompts(5))

    assert [r.output.content for r in results if isinstance(r.output, AIMessage)] == [
        f"echo: {p}" for p in prompts(5)
    ]
    first = results[0]
    assert first.output is not None and first.usage is not None and first.usage.total_tokens > 0
    meta = first.output.response_metadata
    assert meta["model_name"] == "gpt-4o-mini"  # Azure names the model, not the deployment
    assert meta["finish_reason"] == "stop"
    assert meta["content_filter_results"]["hate"]["filtered"] is False
    assert meta["prompt_filter_results"][0]["prompt_index"] == 0
    assert server.stats().batches_created == 1
    assert batch_clock.sleeps == [10.0, 20.0, 40.0, 80.0]


async def test_every_call_carries_api_version_and_key_and_lines_name_the_deployment(
    batch_server_on: Any, batch_clock: FakeClock, azure_client: Any
) -> None:
    server = batch_server_on()
    recorder = Recorder()
    own = openai.DefaultAsyncHttpxClient(event_hooks={"request": [recorder]})
    runner = BatchAPIRunner(
        azure_llm(server, http_async_client=own).bind(temperature=0.2),
        options=options_on(batch_clock),
    )
    try:
        results = await runner.arun(prompts(2))
    finally:
        await own.aclose()

    assert all(r.ok for r in results)
    paths = [(method, path) for method, path, _, _ in recorder.sent]
    assert paths[:2] == [("POST", "/openai/files"), ("POST", "/openai/batches")]
    assert all(version == API_VERSION and keyed for _, _, version, keyed in recorder.sent)
    client = azure_client(server)
    [lines] = input_files(client)
    assert {x["url"] for x in lines} == {"/chat/completions"}
    assert [x["body"] for x in lines] == [
        {
            "messages": [{"content": p, "role": "user"}],
            "model": DEPLOYMENT,
            "temperature": 0.2,
        }
        for p in prompts(2)
    ]
    assert [b.endpoint for b in client.batches.list()] == ["/chat/completions"]


def test_a_sync_runs_own_copy_of_the_client_keeps_the_routes_version_and_key(
    batch_server_on: Any, batch_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sync run's job I/O runs on a private loop, through a copy of the model's
    # AsyncAzureOpenAI given a fresh connection pool: watch that pool's requests.
    server = batch_server_on()
    runner = BatchAPIRunner(azure_llm(server), options=options_on(batch_clock))
    recorder = Recorder()
    fresh = openai.DefaultAsyncHttpxClient
    monkeypatch.setattr(
        openai, "DefaultAsyncHttpxClient", lambda: fresh(event_hooks={"request": [recorder]})
    )

    results = runner.run(prompts(2))

    assert all(r.ok for r in results)
    assert [path for _, path, _, _ in recorder.sent][:2] == ["/openai/files", "/openai/batches"]
    assert all(version == API_VERSION and keyed for _, _, version, keyed in recorder.sent)


def test_a_prompt_model_parser_chain_runs_its_local_steps_around_the_jobs(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on()
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("user", "about {x}")])
    runner = BatchAPIRunner(
        prompt | azure_llm(server) | StrOutputParser(), options=options_on(batch_clock)
    )

    results = runner.run([{"x": "cats"}, {"x": "dogs"}])

    assert results.outputs == ["echo: about cats", "echo: about dogs"]
    assert all(r.usage is not None for r in results)


async def test_a_chain_with_two_model_steps_runs_in_two_rounds_across_providers(
    batch_server_on: Any, batch_clock: FakeClock, azure_client: Any
) -> None:
    server = batch_server_on()
    second = azure_llm(server, azure_deployment="gpt-4o-batch")
    chain = (
        llm_for(server)
        | StrOutputParser()
        | RunnableLambda(lambda text: f"again {text}")
        | second
        | StrOutputParser()
    )

    results = await BatchAPIRunner(chain, options=options_on(batch_clock)).arun(["a", "b"])

    assert results.outputs == ["echo: again echo: a", "echo: again echo: b"]
    assert server.stats().batches_created == 2
    [azure_batch, openai_batch] = azure_client(server).batches.list()
    assert openai_batch.endpoint == "/v1/chat/completions"
    assert azure_batch.endpoint == "/chat/completions"


async def test_structured_output_is_parsed_from_batch_answers(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    class Topic(BaseModel):
        name: str

    server = batch_server_on(structured_answers=True)
    runner = BatchAPIRunner(
        azure_llm(server).with_structured_output(Topic), options=options_on(batch_clock)
    )

    results = await runner.arun(prompts(2))

    assert all(isinstance(r.output, Topic) for r in results), results.failed


async def test_batch_answers_match_what_the_deployment_answers_online(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on()
    llm = azure_llm(server)

    online = await llm.ainvoke("compare me")
    [batched] = await BatchAPIRunner(llm, options=options_on(batch_clock)).arun(["compare me"])

    assert isinstance(batched.output, AIMessage)
    assert batched.output.content == online.content
    assert batched.output.usage_metadata == online.usage_metadata
    for key in ("model_name", "finish_reason", "content_filter_results", "prompt_filter_results"):
        assert batched.output.response_metadata[key] == online.response_metadata[key], key


# --------------------------------------------------------------------------- deployments


async def test_a_base_url_naming_the_deployment_sends_jobs_to_the_openai_routes(
    batch_server_on: Any, batch_clock: FakeClock, azure_client: Any
) -> None:
    server = batch_server_on()
    llm = azure_llm(server, base_url=f"{server.url}/openai/deployments/{DEPLOYMENT}")

    results = await BatchAPIRunner(llm, options=options_on(batch_clock)).arun(prompts(2))

    assert all(r.ok for r in results)
    [lines] = input_files(azure_client(server))
    assert {x["body"]["model"] for x in lines} == {DEPLOYMENT}


def test_the_deployment_is_the_one_an_online_call_would_go_to(
    batch_server_on: Any,
) -> None:
    server = batch_server_on()
    no_deployment = {"azure_deployment": None}

    assert deployment_of(azure_llm(server, model="gpt-4o-mini"), {}) == DEPLOYMENT
    assert deployment_of(azure_llm(server, model="gpt-4o", **no_deployment), {}) == "gpt-4o"
    bound = {"model": "other-deployment"}
    assert deployment_of(azure_llm(server, **no_deployment), bound) == "other-deployment"
    with pytest.raises(ConfigurationError, match="azure_deployment="):
        BatchAPIRunner(azure_llm(server, **no_deployment))


def test_the_responses_api_is_refused_before_anything_is_sent(batch_server_on: Any) -> None:
    server = batch_server_on()

    with pytest.raises(ConfigurationError, match=r"AzureChatOpenAI\(use_responses_api=False\)"):
        BatchAPIRunner(azure_llm(server, use_responses_api=True))
    assert server.stats().total_requests == 0


def test_a_filtered_answer_fails_as_azurechatopenai_fails_it_online(
    batch_server_on: Any,
) -> None:
    backend = AzureBackend(azure_llm(batch_server_on()), {})
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None},
                "finish_reason": "content_filter",
            }
        ],
    }

    with pytest.raises(ValueError, match="content filter"):
        backend.message(body)


@pytest.mark.parametrize("provider", ["sync", "async"])
async def test_an_entra_id_token_provider_authenticates_the_job_calls(
    batch_server_on: Any, batch_clock: FakeClock, provider: str
) -> None:
    server = batch_server_on()
    issued: list[str] = []
    token = "-".join(("entra", "token"))

    def sync_token() -> str:
        issued.append("sync")
        return token

    async def async_token() -> str:
        issued.append("async")
        return token

    options = (
        {"azure_ad_token_provider": sync_token}
        if provider == "sync"
        else {"azure_ad_async_token_provider": async_token}
    )
    runner = BatchAPIRunner(azure_llm(server, **options), options=options_on(batch_clock))

    results = await runner.arun(prompts(2))

    assert all(r.ok for r in results)
    assert issued and set(issued) == {provider}


# --------------------------------------------------------------------------- jobs


async def test_inputs_beyond_the_request_limit_are_split_into_several_jobs(
    batch_server_on: Any, batch_clock: FakeClock, azure_client: Any
) -> None:
    server = batch_server_on()
    runner = BatchAPIRunner(
        azure_llm(server), options=options_on(batch_clock, max_requests_per_job=3)
    )

    results = await runner.arun(prompts(10))

    assert all(r.ok for r in results)
    assert [len(lines) for lines in input_files(azure_client(server))] == [3, 3, 3, 1]


async def test_an_azure_job_takes_up_to_100k_requests(batch_server_on: Any) -> None:
    backend = AzureBackend(azure_llm(batch_server_on()), {})

    async with backend.client(private_loop=False) as api:
        assert api.max_requests == MAX_REQUESTS == 100_000
        assert b'"url":"/chat/completions"' in api.line("0-1", "{}")


async def test_lines_that_fail_with_5xx_are_resubmitted_until_they_succeed(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(batch_line_error_rate=0.4, seed=3)
    runner = BatchAPIRunner(azure_llm(server), options=options_on(batch_clock, max_resubmits=6))

    results = await runner.arun(prompts(12))

    assert all(r.ok for r in results), results.failed
    assert any(r.attempts > 1 for r in results)
    assert server.stats().batches_created == max(r.attempts for r in results)


async def test_cancel_stops_the_running_job_and_keeps_what_was_answered(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(batch_completion_delay=10.0)
    waiting, go = asyncio.Event(), asyncio.Event()

    async def hold(seconds: float) -> None:
        waiting.set()
        await go.wait()

    options = BatchAPIOptions(sleep=hold, clock=batch_clock, poll_initial_wait=1.0)
    runner = BatchAPIRunner(azure_llm(server), options=options)
    run = asyncio.ensure_future(runner.arun(prompts(10)))
    await waiting.wait()  # the job exists and was checked once
    batch_clock.advance(3.0)  # 3 of its 10 lines are answered

    cancelled = await runner.acancel()
    go.set()
    results = await run

    assert cancelled == ["batch_fake000000000001"]
    assert len(results.succeeded) == 3
    for r in results.failed:
        assert r.error is not None and isinstance(r.error.exception, BatchJobUnfinishedError)
        assert r.error.exception.status == "cancelled"


async def test_a_restarted_run_resumes_its_jobs_without_creating_any_twice(
    batch_server_on: Any, batch_clock: FakeClock, tmp_path: Path
) -> None:
    server = batch_server_on(batch_completion_delay=100.0)
    state = tmp_path / "jobs.sqlite"

    async def crash(seconds: float) -> None:
        raise Crash("the process died while waiting")

    first = BatchAPIRunner(
        azure_llm(server),
        options=BatchAPIOptions(sleep=crash, clock=batch_clock, max_requests_per_job=5),
        state_path=state,
    )
    with pytest.raises(Crash):
        await first.arun(prompts(10))
    assert server.stats().batches_created == 2

    second = BatchAPIRunner(
        azure_llm(server),
        options=options_on(batch_clock, max_requests_per_job=5),
        state_path=state,
    )
    results = second.run(prompts(10))  # resumed by a sync run

    assert [r.output.content for r in results if isinstance(r.output, AIMessage)] == [
        f"echo: {p}" for p in prompts(10)
    ]
    assert (server.stats().batches_created, server.stats().files_uploaded) == (2, 2)


# --------------------------------------------------------------------------- money, secrets


async def test_each_item_costs_the_batch_price_of_the_model_azure_names(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on()
    runner = BatchAPIRunner(azure_llm(server), options=options_on(batch_clock))

    results = await runner.arun(prompts(3))

    book = PriceBook()
    for r in results:
        assert r.usage is not None and r.cost is not None
        usage = CallUsage(r.usage.input_tokens, r.usage.output_tokens)
        online = book.cost(usage, "gpt-4o-mini")
        assert online is not None and r.cost == pytest.approx(online / 2)


async def test_a_deployment_answering_under_its_own_name_is_priced_with_prices(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on()
    llm = azure_llm(server, azure_deployment="summarizer")

    with pytest.warns(CostWarning, match="summarizer"):
        unpriced = await BatchAPIRunner(
            llm, options=options_on(batch_clock, prices=PriceBook())
        ).arun(["x"])
    priced = await BatchAPIRunner(
        llm, options=options_on(batch_clock, prices={"summarizer": Price(1.0, 1.0)})
    ).arun(["x"])

    assert unpriced[0].ok and unpriced[0].cost is None
    assert priced[0].usage is not None
    assert priced[0].cost == pytest.approx(priced[0].usage.total_tokens / 1e6 * 0.5)


async def test_the_api_key_is_never_logged_or_stored(
    batch_server_on: Any, batch_clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "".join(("very", "-secret-", "azure-credential-98765"))
    server = batch_server_on(reject_prompts=frozenset({"poison"}))
    state = tmp_path / "jobs.sqlite"
    caplog.set_level(logging.DEBUG)
    runner = BatchAPIRunner(
        azure_llm(server, api_key=secret), options=options_on(batch_clock), state_path=state
    )

    results = await runner.arun(["ok", "poison"])

    assert results[0].ok and not results[1].ok
    assert secret not in caplog.text
    assert secret.encode() not in state.read_bytes()
    assert secret not in repr(runner) and secret not in repr(results[1].error)
