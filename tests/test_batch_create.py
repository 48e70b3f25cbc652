"""Creating jobs: never twice, never in a burst. Real SDK clients over HTTP, fake clock."""

from __future__ import annotations

import itertools
from typing import Any

import httpx2
import openai
import pytest
from langchain_openai import AzureChatOpenAI, ChatOpenAI
from pydantic import SecretStr

from langchain_batchkit import BatchAPIOptions, BatchAPIRunner
from langchain_batchkit._batch_api._create import CREATE_TRIES
from langchain_batchkit._batch_api._provider import OpenAIBatches
from langchain_batchkit.testing import FakeClock
from tests.batch_support import API_KEY, options_on
from tests.test_batch_azure import API_VERSION, DEPLOYMENT


def chat(server: Any, max_retries: int = 0) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=server.base_url,
        api_key=SecretStr(API_KEY),
        max_retries=max_retries,
    )


def outage(status: int) -> openai.APIStatusError:
    request = httpx2.Request("POST", "https://api.example/v1/batches")
    response = httpx2.Response(status, request=request)
    kind = openai.InternalServerError if status >= 500 else openai.BadRequestError
    return kind("the provider said no", response=response, body=None)


def failing_creates(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, errors: list[Exception]
) -> list[float]:
    """Make OpenAIBatches.create raise ``errors`` in turn, then work; the fake times tried."""
    create = OpenAIBatches.create
    tried: list[float] = []

    async def flaky(self: OpenAIBatches, **kwargs: Any) -> Any:
        tried.append(clock())
        if len(tried) <= len(errors):
            raise errors[len(tried) - 1]
        return await create(self, **kwargs)

    monkeypatch.setattr(OpenAIBatches, "create", flaky)
    return tried


@pytest.mark.parametrize("provider", ["openai", "azure"])
def test_the_create_call_is_never_retried_inside_the_sdk(
    batch_server_on: Any, batch_clock: FakeClock, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    # A create whose answer was lost may have made the job: only the runner, which
    # looks for it first, may try again. The model's own client keeps its retries.
    from openai.resources.batches import AsyncBatches

    server = batch_server_on()
    seen: list[int] = []
    create = AsyncBatches.create

    async def spy(self: AsyncBatches, *args: Any, **kwargs: Any) -> Any:
        seen.append(self._client.max_retries)
        return await create(self, *args, **kwargs)

    monkeypatch.setattr(AsyncBatches, "create", spy)
    if provider == "openai":
        llm: Any = chat(server, max_retries=2)
    else:
        llm = AzureChatOpenAI(
            azure_endpoint=server.url,
            azure_deployment=DEPLOYMENT,
            api_version=API_VERSION,
            api_key=SecretStr(API_KEY),
            max_retries=2,
        )

    results = BatchAPIRunner(llm, options=options_on(batch_clock)).run(["a", "b"])

    assert all(r.ok for r in results)
    assert seen == [0]
    assert llm.root_async_client.max_retries == 2  # the model's own client keeps them


def test_the_anthropic_create_call_is_never_retried_inside_the_sdk(
    batch_server_on: Any, batch_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("langchain_anthropic")
    from anthropic.resources.messages.batches import AsyncBatches

    from tests.anthropic_support import claude_for

    server = batch_server_on()
    seen: list[int] = []
    create = AsyncBatches.create

    async def spy(self: AsyncBatches, *args: Any, **kwargs: Any) -> Any:
        seen.append(self._client.max_retries)
        return await create(self, *args, **kwargs)

    monkeypatch.setattr(AsyncBatches, "create", spy)

    results = BatchAPIRunner(
        claude_for(server, max_retries=2), options=options_on(batch_clock)
    ).run(["a"])

    assert results[0].ok and seen == [0]


async def test_a_create_that_fails_for_a_passing_reason_waits_and_costs_no_submission(
    batch_server_on: Any, batch_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = batch_server_on()
    tried = failing_creates(monkeypatch, batch_clock, [outage(503)] * 3)
    options = options_on(batch_clock, max_resubmits=0, poll_initial_wait=10.0)
    runner = BatchAPIRunner(chat(server), options=options)

    results = await runner.arun(["a", "b"])

    assert all(r.ok for r in results) and [r.attempts for r in results] == [1, 1]
    gaps = [later - earlier for earlier, later in itertools.pairwise(tried)]
    assert gaps == [10.0, 20.0, 40.0]  # the poll backoff, growing with each failure
    assert server.stats().batches_created == 1


async def test_a_create_the_provider_refuses_for_good_fails_its_items_at_once(
    batch_server_on: Any, batch_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = batch_server_on()
    tried = failing_creates(monkeypatch, batch_clock, [outage(400)])
    llm = chat(server)

    results = await BatchAPIRunner(llm, options=options_on(batch_clock)).arun(["a"])

    assert len(tried) == 1
    assert results[0].error is not None and "the provider said no" in results[0].error.message


async def test_creations_that_keep_failing_end_with_the_error(
    batch_server_on: Any, batch_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = batch_server_on()
    tried = failing_creates(monkeypatch, batch_clock, [outage(503)] * 1000)
    llm = chat(server)
    options = BatchAPIOptions(clock=batch_clock, sleep=batch_clock.sleep, max_resubmits=0)

    [result] = await BatchAPIRunner(llm, options=options).arun(["a"])

    assert result.error is not None and result.error.type == "InternalServerError"
    assert len(tried) == CREATE_TRIES + 1
