"""No API key on any surface, even when the provider echoes it back.

A real ``ChatOpenAI`` talks, through the real openai SDK, to a transport that
answers 401, 429 and 500 with the request's key echoed in the error body (as a
misconfigured proxy or a verbose gateway does), so every error the SDK builds
carries the key in its message, its body and its request headers. Every surface
a user can print, export, pickle or log must show none of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import traceback
from pathlib import Path
from typing import Any

import httpx2
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI

from langchain_batchkit import (
    BatchFailedError,
    BatchResult,
    ConfigurationError,
    ItemResult,
    MicroBatcher,
    ProgressEvent,
    RetryPolicy,
    batchkit,
)
from langchain_batchkit.multimodal import to_csv, to_jsonl
from langchain_batchkit.testing import FakeClock, FakeServerConfig
from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

SECRET = "sk-live-THISISASECRETKEY1234567890"
KEY_PART = "THISISASECRETKEY"  # any piece of the key that survives is a leak
STATUSES = ("401", "429", "500")
PROMPTS = ["ok", *STATUSES]


def _answer(request: httpx2.Request) -> httpx2.Response:
    """The provider: ``"ok"`` is answered, a status code as prompt gets that error,
    with the caller's key echoed in the message and the error's other fields."""
    key = request.headers["authorization"].removeprefix("Bearer ")
    prompt = json.loads(request.content)["messages"][-1]["content"]
    if prompt == "ok":
        return httpx2.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "fine"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )
    error = {
        "message": f"Incorrect API key provided: {key}. Authorization: Bearer {key}",
        "type": "invalid_request_error",
        "param": key,
        "code": key,
    }
    return httpx2.Response(int(prompt), json={"error": error}, headers={"x-echo": key})


def echoing_chat() -> ChatOpenAI:
    return ChatOpenAI(
        base_url="https://api.example.test/v1",
        api_key=SECRET,  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(_answer)),
        http_async_client=httpx2.AsyncClient(transport=httpx2.MockTransport(_answer)),
    )


def assert_no_key(*texts: str | bytes) -> None:
    for text in texts:
        if isinstance(text, bytes):
            assert KEY_PART.encode() not in text, text
        else:
            assert KEY_PART not in text, text


def package_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every record the package logged, formatted with its exc_info, if any."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [formatter.format(r) for r in caplog.records if r.name.startswith("langchain_batchkit")]


@pytest.fixture(params=["sync", "async"])
def failed_run(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> BatchResult[Any, Any]:
    """One batch over every status, 429 and 500 retried once: the key is in the
    live errors (the test checks that it is), and must be nowhere else."""
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    kit = batchkit(
        echoing_chat(),
        retry=RetryPolicy(max_attempts=2, max_rate_limited=1, clock=clock, seed=0),
        progress=True,
    )
    results = kit.batch(PROMPTS) if request.param == "sync" else asyncio.run(kit.abatch(PROMPTS))
    assert results[0].ok
    assert [r.error.type if r.error else None for r in results] == [
        None,
        "OpenAIAuthenticationError",
        "OpenAIRateLimitError",
        "OpenAIAPIError",
    ]
    assert [len(r.history) for r in results] == [0, 0, 1, 1]  # 401 is not retried
    for r in results.failed:  # the provider did echo the key: the test means something
        assert r.error is not None and r.error.exception is not None
        assert SECRET in str(r.error.exception)
        assert SECRET in repr(r.error.exception.args)
    return results


def test_no_key_in_str_or_repr_of_results_and_errors(failed_run: BatchResult[Any, Any]) -> None:
    errors = [e for r in failed_run for e in (*(a.error for a in r.history), r.error) if e]
    assert len(errors) == 5
    assert_no_key(
        str(failed_run),
        repr(failed_run),
        *(repr(r) for r in failed_run),
        *(str(e) for e in errors),
        *(repr(e) for e in errors),
        *(e.message for e in errors),
        *(e.traceback for e in errors),
    )
    assert all("***" in e.message for e in errors)


def test_no_key_in_summary_records_or_pandas(failed_run: BatchResult[Any, Any]) -> None:
    frame = failed_run.to_pandas()

    assert_no_key(
        str(failed_run.summary()),
        json.dumps(failed_run.to_records(), default=repr),
        frame.to_string(),
        frame.to_csv(),
    )


def test_no_key_in_the_notebook_view(failed_run: BatchResult[Any, Any]) -> None:
    assert_no_key(failed_run._repr_html_())


def test_no_key_in_the_traceback_of_an_uncaught_raise_for_errors(
    failed_run: BatchResult[Any, Any],
) -> None:
    with pytest.raises(BatchFailedError) as info:
        failed_run.raise_for_errors()

    printed = "".join(traceback.format_exception(info.value))
    assert_no_key(printed, str(info.value), repr(info.value))
    cause = info.value.__cause__
    assert cause is not None and type(cause).__name__ == "OpenAIAuthenticationError"
    assert str(cause) == failed_run[1].error.message  # type: ignore[union-attr]
    assert "OpenAIAuthenticationError: Error code: 401" in printed
    assert_no_key(str(cause), repr(cause), repr(cause.args), repr(vars(cause)))


def test_no_key_in_pickles_which_round_trip_everything_else(
    failed_run: BatchResult[Any, Any],
) -> None:
    dumped = pickle.dumps(failed_run)
    with pytest.raises(BatchFailedError) as info:
        failed_run.raise_for_errors()

    assert_no_key(dumped, *(pickle.dumps(r) for r in failed_run), pickle.dumps(info.value))
    loaded = pickle.loads(dumped)
    assert list(loaded) == list(failed_run)  # equal, errors included (as text)
    assert (loaded.wall_time, loaded.complete) == (failed_run.wall_time, failed_run.complete)
    errors = [e for r in loaded.failed for e in (*(a.error for a in r.history), r.error) if e]
    assert all(e.exception is None for e in errors)
    assert pickle.loads(pickle.dumps(info.value)).failed == info.value.failed


def test_no_key_in_the_packages_logs_at_debug(
    failed_run: BatchResult[Any, Any],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(BatchFailedError):
        failed_run.raise_for_errors()
    failed_run._repr_html_()

    assert_no_key(*package_log(caplog), capsys.readouterr().err)


def test_no_key_in_caption_exports(failed_run: BatchResult[Any, Any], tmp_path: Path) -> None:
    to_csv(failed_run, tmp_path / "captions.csv")
    to_jsonl(failed_run, tmp_path / "captions.jsonl")

    assert_no_key(
        (tmp_path / "captions.csv").read_bytes(), (tmp_path / "captions.jsonl").read_bytes()
    )


def test_no_key_in_the_log_when_a_progress_hook_reraises_an_items_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def reraise(event: ProgressEvent) -> None:
        if event.result is not None and event.result.error is not None:
            assert event.result.error.exception is not None
            raise event.result.error.exception

    with caplog.at_level(logging.DEBUG):
        kit = batchkit(echoing_chat(), retry=None, progress=False, on_progress=reraise)
        kit.batch(["401"])

    [logged] = [t for t in package_log(caplog) if "on_progress" in t]
    assert "OpenAIAuthenticationError" in logged
    assert_no_key(logged)


async def test_no_key_in_the_microbatcher_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    llm = echoing_chat()

    async def all_or_nothing(prompts: list[Any]) -> list[Any]:
        return await llm.abatch(prompts)  # the first error fails the whole batch call

    batcher: MicroBatcher[str, Any] = MicroBatcher(all_or_nothing, max_queue_time=0)
    with caplog.at_level(logging.DEBUG):
        outcomes = await asyncio.gather(
            *(batcher.ainvoke(s) for s in STATUSES), return_exceptions=True
        )
        await batcher.stop()

    assert all(isinstance(o, Exception) for o in outcomes)
    logged = [t for t in package_log(caplog) if "failed" in t]
    assert logged and "OpenAIAuthenticationError" in logged[0]
    assert_no_key(*package_log(caplog))


def test_a_pickled_timeout_carries_no_key_and_refuses_to_retry(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    # The live error of a plain timeout holds the request, and with it the
    # ``authorization: Bearer sk-...`` header; the kit holds the client and the key.
    server = fake_openai_server_factory(FakeServerConfig(script={"slow": ("hang",)}))
    llm = ChatOpenAI(
        base_url=server.base_url,
        api_key=SECRET,  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
        timeout=0.3,
    )
    results = batchkit(llm | RunnableLambda(lambda m: m.content), retry=None, progress=False).batch(
        ["fast", "slow"]
    )
    error = results[1].error
    assert error is not None and error.type == "OpenAITimeoutError", error
    assert SECRET.encode() in pickle.dumps(error.exception)  # what used to be pickled

    dumped = pickle.dumps(results)
    loaded = pickle.loads(dumped)

    assert_no_key(dumped)
    assert list(loaded) == list(results) and loaded.outputs == ["echo: fast", None]
    with pytest.raises(RuntimeError, match=r"unpickled.*cannot retry_failed"):
        loaded.retry_failed()
    with pytest.raises(RuntimeError, match=r"unpickled.*cannot retry_failed"):
        asyncio.run(loaded.aretry_failed())


def test_an_unpickled_result_with_nothing_failed_still_has_nothing_to_retry() -> None:
    kit = batchkit(RunnableLambda(lambda x: x), progress=False)
    loaded = pickle.loads(pickle.dumps(kit.batch([1, 2])))

    assert loaded.retry_failed() is loaded


# -- leaks in how a run stops and how handler errors are logged -----------------------------


def _rejecting_seed(request: httpx2.Request) -> httpx2.Response:
    key = request.headers["authorization"].removeprefix("Bearer ")
    error = {
        "message": f"Unrecognized request argument supplied: seed (key {key})",
        "type": "invalid_request_error",
        "param": "seed",
        "code": None,
    }
    return httpx2.Response(400, json={"error": error})


def test_no_key_when_a_keyword_the_provider_rejects_stops_the_run() -> None:
    llm = ChatOpenAI(
        base_url="https://api.example.test/v1",
        api_key=SECRET,  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(_rejecting_seed)),
    )

    with pytest.raises(ConfigurationError, match="seed") as info:
        batchkit(llm, progress=False).batch(["x"], seed=1)

    assert_no_key(str(info.value), "".join(traceback.format_exception(info.value)))


class _ReRaisingHandler(BaseCallbackHandler):
    """A callback handler that re-raises the live error of the item it is told about."""

    raise_error = True

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        if isinstance(outputs, ItemResult) and outputs.error and outputs.error.exception:
            raise outputs.error.exception


def test_no_key_in_the_log_when_a_callback_handler_reraises_an_items_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kit = batchkit(echoing_chat(), retry=None, progress=False)

    with caplog.at_level(logging.DEBUG):
        results = kit.batch(["401"], config={"callbacks": [_ReRaisingHandler()]})

    assert results[0].error is not None
    assert any("callback handler raised" in t for t in package_log(caplog))
    assert_no_key(*package_log(caplog))
