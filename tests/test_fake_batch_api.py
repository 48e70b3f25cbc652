"""Specification of the fake server's Batch API, driven by the real openai clients.

Files are uploaded as multipart forms, batches are created, polled and cancelled
through ``openai.OpenAI`` / ``openai.AsyncOpenAI``. A batch's timeline runs on a
:class:`FakeClock`: tests advance it and retrieve, and never sleep.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import httpx
import openai
import pytest
from openai.types import Batch

from langchain_batchkit.testing._clock import FakeClock
from langchain_batchkit.testing._fakeserver import FakeOpenAIServer, FakeServerConfig

if TYPE_CHECKING:  # importing the plugin here would run before pytest can register it
    from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

API_KEY = "sk-test"
MODEL = "gpt-4o-mini"
ENDPOINT: Final = "/v1/chat/completions"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(16)

Record = dict[str, Any]


def request_line(custom_id: str, prompt: str, **overrides: Any) -> Record:
    body: Record = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body, **overrides}


def jsonl(lines: Sequence[Record | str]) -> bytes:
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()


def prompts(n: int) -> list[Record]:
    return [request_line(f"item-{i}", f"prompt {i}") for i in range(n)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client() -> Iterator[Any]:
    """Build sync openai clients (max_retries=0) and close them after the test."""
    clients: list[openai.OpenAI] = []

    def make(server: FakeOpenAIServer) -> openai.OpenAI:
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def server_on_clock(fake_openai_server_factory: FakeServerFactory, clock: FakeClock) -> Any:
    """Start a server whose Batch API timeline runs on the test's fake clock."""

    def start(**options: Any) -> FakeOpenAIServer:
        return fake_openai_server_factory(FakeServerConfig(clock=clock, **options))

    return start


def submit(client: openai.OpenAI, lines: Sequence[Record | str], **create: Any) -> Batch:
    uploaded = client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h", **create
    )


def records(client: openai.OpenAI, file_id: str | None) -> list[Record]:
    assert file_id is not None
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def answers(output: list[Record]) -> dict[str, str]:
    """custom_id -> answer text, asserting that no custom_id appears twice."""
    by_id = {
        r["custom_id"]: r["response"]["body"]["choices"][0]["message"]["content"] for r in output
    }
    assert len(by_id) == len(output)
    return by_id


# --------------------------------------------------------------------------- files


def test_uploaded_file_is_an_openai_file_object_whose_content_round_trips(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    client = make_client(fake_openai_server)
    data = jsonl(prompts(2))

    uploaded = client.files.create(file=('say "hi".jsonl', data), purpose="batch")

    assert uploaded.id.startswith("file-")
    assert (uploaded.object, uploaded.purpose, uploaded.status) == ("file", "batch", "processed")
    assert uploaded.bytes == len(data)
    assert uploaded.filename == 'say "hi".jsonl'
    assert client.files.retrieve(uploaded.id) == uploaded
    assert client.files.content(uploaded.id).content == data
    assert [f.id for f in client.files.list(purpose="batch")] == [uploaded.id]


def test_deleted_file_is_gone(fake_openai_server: FakeOpenAIServer, make_client: Any) -> None:
    client = make_client(fake_openai_server)
    uploaded = client.files.create(file=("a.jsonl", b"{}"), purpose="batch")

    deleted = client.files.delete(uploaded.id)

    assert deleted.deleted
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        client.files.retrieve(uploaded.id)


def test_content_of_a_missing_file_is_404(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    with pytest.raises(openai.NotFoundError, match="file-missing"):
        make_client(fake_openai_server).files.content("file-missing")


def test_batch_upload_must_be_a_jsonl_file(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    client = make_client(fake_openai_server)

    with pytest.raises(openai.BadRequestError, match=r"\.jsonl") as caught:
        client.files.create(file=("input.txt", jsonl(prompts(1))), purpose="batch")

    assert caught.value.code == "invalid_file_format"


def test_batch_file_over_the_byte_limit_is_refused_at_upload(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(batch_max_file_bytes=100))
    client = make_client(server)

    with pytest.raises(openai.BadRequestError, match="at most 100 bytes") as caught:
        client.files.create(file=("big.jsonl", jsonl(prompts(3))), purpose="batch")

    assert caught.value.code == "file_too_large"
    assert server.stats().files_uploaded == 0


def test_malformed_multipart_body_gets_400(fake_openai_server: FakeOpenAIServer) -> None:
    response = httpx.post(
        f"{fake_openai_server.base_url}/files",
        content=b"--xyz\r\nno headers here",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )

    assert response.status_code == 400
    assert "multipart" in response.json()["error"]["message"]


# --------------------------------------------------------------------------- answers


def test_every_custom_id_is_answered_exactly_once_with_its_own_echo(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    client = make_client(fake_openai_server)

    created = submit(client, prompts(20), metadata={"job": "spec"})
    batch = client.batches.retrieve(created.id)

    assert created.status == "validating"
    assert batch.status == "completed"
    assert batch.id.startswith("batch_")
    assert batch.metadata == {"job": "spec"}
    assert batch.model == MODEL
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 20, "completed": 20, "failed": 0}
    assert batch.error_file_id is None
    output = records(client, batch.output_file_id)
    assert answers(output) == {f"item-{i}": f"echo: prompt {i}" for i in range(20)}
    for record in output:
        assert record["id"].startswith("batch_req_")
        assert record["error"] is None
        assert record["response"]["status_code"] == 200
        assert record["response"]["body"]["object"] == "chat.completion"
        assert record["response"]["body"]["usage"]["total_tokens"] > 0


def test_output_is_shuffled_the_same_way_for_the_same_seed(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    def output_order(seed: int) -> list[str]:
        client = make_client(fake_openai_server_factory(FakeServerConfig(seed=seed)))
        batch = client.batches.retrieve(submit(client, prompts(20)).id)
        return [r["custom_id"] for r in records(client, batch.output_file_id)]

    first, again = output_order(seed=3), output_order(seed=3)

    assert first == again
    assert first != [f"item-{i}" for i in range(20)]
    assert sorted(first) == sorted(f"item-{i}" for i in range(20))


def test_batch_lines_skip_the_online_rate_limit(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(requests_per_minute=1))
    client = make_client(server)

    batch = client.batches.retrieve(submit(client, prompts(5)).id)

    assert batch.status == "completed"
    assert len(records(client, batch.output_file_id)) == 5
    assert server.stats().rate_limited == 0


def test_batch_usage_sums_the_answered_lines(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    client = make_client(fake_openai_server)

    batch = client.batches.retrieve(submit(client, prompts(4)).id)

    output = records(client, batch.output_file_id)
    assert batch.usage is not None
    assert batch.usage.total_tokens == sum(
        r["response"]["body"]["usage"]["total_tokens"] for r in output
    )


async def test_async_client_runs_a_batch_end_to_end(server_on_clock: Any, clock: FakeClock) -> None:
    server = server_on_clock(batch_completion_delay=60.0)
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key=API_KEY, max_retries=0
    ) as client:
        uploaded = await client.files.create(file=("in.jsonl", jsonl(prompts(3))), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
        )
        clock.advance(60.0)
        batch = await client.batches.retrieve(batch.id)
        assert batch.output_file_id is not None
        content = await client.files.content(batch.output_file_id)

    assert batch.status == "completed"
    output = [json.loads(line) for line in content.text.splitlines()]
    assert answers(output) == {f"item-{i}": f"echo: prompt {i}" for i in range(3)}


# --------------------------------------------------------------------------- timeline


def test_batch_progresses_on_the_clock_and_completes_after_the_delay(
    server_on_clock: Any, clock: FakeClock, make_client: Any
) -> None:
    client = make_client(server_on_clock(batch_completion_delay=10.0))
    batch_id = submit(client, prompts(10)).id

    early = client.batches.retrieve(batch_id)
    clock.advance(5.0)
    halfway = client.batches.retrieve(batch_id)
    clock.advance(5.0)
    done = client.batches.retrieve(batch_id)

    assert (early.status, early.output_file_id) == ("in_progress", None)
    assert early.request_counts is not None and early.request_counts.completed == 0
    assert halfway.status == "in_progress"
    assert halfway.request_counts is not None and halfway.request_counts.completed == 5
    assert done.status == "completed"
    assert done.request_counts is not None and done.request_counts.completed == 10
    assert done.completed_at is not None and done.in_progress_at is not None
    assert done.completed_at - done.created_at == 10
    assert len(records(client, done.output_file_id)) == 10


def test_expired_batch_lists_unfinished_lines_as_batch_expired(
    server_on_clock: Any, make_client: Any
) -> None:
    client = make_client(server_on_clock(batch_expired_fraction=0.25))

    batch = client.batches.retrieve(submit(client, prompts(8)).id)

    assert batch.status == "expired"
    assert batch.expired_at is not None
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 8, "completed": 6, "failed": 2}
    errors = records(client, batch.error_file_id)
    assert [r["error"]["code"] for r in errors] == ["batch_expired", "batch_expired"]
    assert all(r["response"] is None for r in errors)
    done = answers(records(client, batch.output_file_id))
    assert set(done) | {r["custom_id"] for r in errors} == {f"item-{i}" for i in range(8)}


# --------------------------------------------------------------------------- cancel


def test_cancel_keeps_finished_lines_and_drops_the_rest_from_both_files(
    server_on_clock: Any, clock: FakeClock, make_client: Any
) -> None:
    server = server_on_clock(batch_completion_delay=10.0)
    client = make_client(server)
    batch_id = submit(client, prompts(10)).id
    clock.advance(3.0)

    cancelling = client.batches.cancel(batch_id)
    clock.advance(10.0)
    cancelled = client.batches.retrieve(batch_id)

    assert cancelling.status == "cancelling"
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None and cancelled.cancelling_at is not None
    assert cancelled.request_counts is not None
    assert cancelled.request_counts.model_dump() == {"total": 10, "completed": 3, "failed": 0}
    assert len(answers(records(client, cancelled.output_file_id))) == 3
    assert cancelled.error_file_id is None
    assert server.stats().batch_lines_processed == 3


def test_batch_stays_cancelling_for_the_cancel_delay(
    server_on_clock: Any, clock: FakeClock, make_client: Any
) -> None:
    client = make_client(server_on_clock(batch_completion_delay=10.0, batch_cancel_delay=5.0))
    batch_id = submit(client, prompts(2)).id
    client.batches.cancel(batch_id)

    clock.advance(4.9)
    assert client.batches.retrieve(batch_id).status == "cancelling"
    clock.advance(0.1)
    assert client.batches.retrieve(batch_id).status == "cancelled"


def test_cancelling_a_completed_batch_is_a_conflict(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    client = make_client(fake_openai_server)
    batch_id = submit(client, prompts(1)).id

    with pytest.raises(openai.ConflictError, match="status 'completed'"):
        client.batches.cancel(batch_id)


# --------------------------------------------------------------------------- failing lines


def test_rejected_prompt_and_bad_image_lines_go_to_the_error_file(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(reject_prompts=frozenset({"poison"})))
    client = make_client(server)
    bad_image = request_line("bad-image", "x")
    bad_image["body"]["messages"] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}},
            ],
        }
    ]
    good_image = request_line("good-image", "x")
    good_image["body"]["messages"][0]["content"] = [
        {"type": "text", "text": "look"},
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{base64.b64encode(PNG).decode()}"},
        },
    ]
    lines = [request_line("ok", "fine"), request_line("poisoned", "a poison pill"), bad_image]

    batch = client.batches.retrieve(submit(client, [*lines, good_image]).id)

    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 4, "completed": 2, "failed": 2}
    assert answers(records(client, batch.output_file_id)) == {
        "ok": "echo: fine",
        "good-image": "echo: look",
    }
    errors = {r["custom_id"]: r for r in records(client, batch.error_file_id)}
    assert set(errors) == {"poisoned", "bad-image"}
    poisoned = errors["poisoned"]["response"]
    assert poisoned["status_code"] == 400
    assert poisoned["body"]["error"]["code"] == "rejected_prompt"
    assert errors["bad-image"]["response"]["body"]["error"]["code"] == "invalid_image_format"
    assert all(r["error"] is None for r in errors.values())


def test_line_error_rate_fails_the_same_lines_with_500_for_the_same_seed(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    def failed_ids() -> set[str]:
        config = FakeServerConfig(batch_line_error_rate=0.3, seed=7)
        client = make_client(fake_openai_server_factory(config))
        batch = client.batches.retrieve(submit(client, prompts(40)).id)
        errors = records(client, batch.error_file_id)
        assert {r["response"]["status_code"] for r in errors} == {500}
        assert len(answers(records(client, batch.output_file_id))) + len(errors) == 40
        return {r["custom_id"] for r in errors}

    first, again = failed_ids(), failed_ids()

    assert first == again
    assert 0 < len(first) < 40


def test_a_failing_response_text_fails_its_line_with_a_logged_500(
    fake_openai_server_factory: FakeServerFactory,
    make_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def answer(prompt: str) -> str:
        if "bug" in prompt:
            raise RuntimeError("answer builder bug")
        return prompt

    client = make_client(fake_openai_server_factory(FakeServerConfig(response_text=answer)))
    lines = [request_line("fine", "fine"), request_line("buggy", "bug")]

    batch = client.batches.retrieve(submit(client, lines).id)

    [error] = records(client, batch.error_file_id)
    assert (error["custom_id"], error["response"]["status_code"]) == ("buggy", 500)
    assert "answer builder bug" in caplog.text


# --------------------------------------------------------------------------- validation


def test_malformed_input_fails_the_batch_with_one_error_per_bad_line(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    client = make_client(fake_openai_server)
    no_custom_id = request_line("x", "p")
    del no_custom_id["custom_id"]
    lines: list[Record | str] = [
        request_line("a", "fine"),
        "{not json",
        no_custom_id,
        request_line("a", "duplicate"),
        request_line("b", "p", url="/v1/embeddings"),
        request_line("c", "p", method="GET"),
        {"custom_id": "d", "method": "POST", "url": ENDPOINT},
    ]

    batch = client.batches.retrieve(submit(client, lines).id)

    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert (batch.output_file_id, batch.error_file_id) == (None, None)
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [
        (2, "invalid_json_line"),
        (3, "missing_required_parameter"),
        (4, "duplicate_custom_id"),
        (5, "url_mismatch"),
        (6, "invalid_method"),
        (7, "missing_required_parameter"),
    ]
    assert batch.errors.data[0].message == "This line is not parseable as valid JSON."
    assert batch.errors.data[1].param == "custom_id"


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        ([], "empty_file"),
        (
            [request_line("a", "p"), request_line("b", "p", body={"model": "gpt-4o"})],
            "model_mismatch",
        ),
    ],
    ids=["empty", "two-models"],
)
def test_input_the_service_refuses_as_a_whole_fails_the_batch(
    fake_openai_server: FakeOpenAIServer, make_client: Any, lines: list[Record], code: str
) -> None:
    client = make_client(fake_openai_server)

    batch = client.batches.retrieve(submit(client, lines).id)

    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert [e.code for e in batch.errors.data] == [code]


def test_more_lines_than_batch_max_requests_fails_with_too_many_tasks(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    client = make_client(fake_openai_server_factory(FakeServerConfig(batch_max_requests=3)))

    within = client.batches.retrieve(submit(client, prompts(3)).id)
    over = client.batches.retrieve(submit(client, prompts(4)).id)

    assert within.status == "completed"
    assert over.status == "failed"
    assert over.errors is not None and over.errors.data is not None
    [error] = over.errors.data
    assert error.code == "too_many_tasks"
    assert error.message is not None and "at most 3" in error.message


def test_create_refuses_bad_parameters(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    client = make_client(fake_openai_server)
    batch_file = client.files.create(file=("in.jsonl", jsonl(prompts(1))), purpose="batch")
    other_file = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")

    with pytest.raises(openai.NotFoundError, match="No such File object"):
        client.batches.create(
            input_file_id="file-missing", endpoint=ENDPOINT, completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError, match="purpose 'batch'"):
        client.batches.create(
            input_file_id=other_file.id, endpoint=ENDPOINT, completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError, match="endpoint") as caught:
        client.batches.create(
            input_file_id=batch_file.id, endpoint="/v1/responses", completion_window="24h"
        )
    assert caught.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError, match="metadata"):
        client.batches.create(
            input_file_id=batch_file.id,
            endpoint=ENDPOINT,
            completion_window="24h",
            metadata={f"k{i}": "v" for i in range(17)},
        )


def test_missing_batch_is_404(fake_openai_server: FakeOpenAIServer, make_client: Any) -> None:
    with pytest.raises(openai.NotFoundError, match="No such Batch object"):
        make_client(fake_openai_server).batches.retrieve("batch_missing")


@pytest.mark.parametrize(
    ("options", "field_name"),
    [
        ({"batch_completion_delay": -1.0}, "batch_completion_delay"),
        ({"batch_cancel_delay": float("inf")}, "batch_cancel_delay"),
        ({"batch_expired_fraction": 1.5}, "batch_expired_fraction"),
        ({"batch_line_error_rate": -0.1}, "batch_line_error_rate"),
        ({"batch_max_requests": 0}, "batch_max_requests"),
        ({"batch_max_file_bytes": 1.5}, "batch_max_file_bytes"),
    ],
)
def test_config_rejects_bad_batch_values_naming_the_field(
    options: dict[str, Any], field_name: str
) -> None:
    with pytest.raises(ValueError, match=f"FakeServerConfig.{field_name} must be"):
        FakeServerConfig(**options)


# --------------------------------------------------------------------------- listing, counters


def test_batches_are_listed_newest_first_across_pages(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    client = make_client(fake_openai_server)
    ids = [submit(client, prompts(1)).id for _ in range(3)]

    first_page = client.batches.list(limit=2)
    every_batch = [batch.id for batch in client.batches.list(limit=2)]

    assert [batch.id for batch in first_page.data] == ids[:0:-1]
    assert first_page.has_more
    assert every_batch == ids[::-1]


def test_counters_count_uploads_batches_and_lines(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    client = make_client(fake_openai_server)
    batch = submit(client, prompts(5))
    submit(client, ["{broken"])

    client.batches.retrieve(batch.id)
    client.batches.retrieve(batch.id)  # a second read runs nothing again

    stats = fake_openai_server.stats()
    assert (stats.files_uploaded, stats.batches_created) == (2, 2)
    assert stats.batch_lines_processed == 5
    assert stats.answers_per_prompt == {}  # batch lines are not online answers


def test_api_key_never_reaches_the_batch_logs(
    fake_openai_server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-very-secret-batch-key-98765"
    caplog.set_level(logging.DEBUG, logger="langchain_batchkit")
    with openai.OpenAI(base_url=fake_openai_server.base_url, api_key=secret) as client:
        batch = submit(client, prompts(2))
        client.batches.retrieve(batch.id)

    assert "POST /v1/files -> 200" in caplog.text
    assert secret not in caplog.text
