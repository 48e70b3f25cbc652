"""Specification of the enqueued-token queue of the Batch API runner.

Providers cap the prompt tokens enqueued across an organisation's open batch jobs
of a model, and refuse a job that would go over. The runner keeps its jobs under
the cap (set, or learned from a refusal), lets jobs beyond it wait, sends refused
jobs again without counting a submission, and shares the queue with every runner
given the same queue file. The end-to-end tests run the real ``ChatOpenAI``
against the fake server, whose timeline runs on a :class:`FakeClock`: no test
waits in real time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr

from langchain_batchkit._batch_api import BatchAPIOptions, BatchAPIRunner, BatchRequestError
from langchain_batchkit._batch_api._provider import OpenAIBatches
from langchain_batchkit._batch_api._queue_policy import (
    Cap,
    admit,
    is_refusal,
    learn,
    limit_in,
    prompt_tokens,
    tighter,
)
from langchain_batchkit._batch_api._queue_store import (
    ENQUEUED_FOR,
    LEARNED_FOR,
    RESERVED_FOR,
    QueueStore,
)
from langchain_batchkit._batch_api._requests import plan_jobs
from langchain_batchkit._batch_api._state import ItemState
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._item import ItemError
from langchain_batchkit.embeddings import BatchEmbeddings
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig
from tests.batch_support import API_KEY, llm_for, options_on

#: Every request below is 10 prompt tokens ("prompt 7": 3, its message 4, the reply 3),
#: counted alike by the runner and by the fake server's ``tokenizer="model"``.
REQUEST = 10
JOB = 5 * REQUEST
#: The fake organisation's limit: three jobs of five requests.
LIMIT = 3 * JOB
OPEN = ("queue", "model")


class Crash(BaseException):
    """Stands for the process dying at some point of a run (not an error to handle)."""


def prompts(n: int, head: str = "prompt") -> list[str]:
    return [f"{head} {i}" for i in range(n)]


def limited_server(batch_server_on: Any, **options: Any) -> FakeOpenAIServer:
    """A fake server enforcing :data:`LIMIT`, counting tokens as the runner does."""
    options.setdefault("batch_max_enqueued_tokens", LIMIT)
    options.setdefault("tokenizer", "model")
    options.setdefault("batch_completion_delay", 100.0)
    server: FakeOpenAIServer = batch_server_on(**options)
    return server


def five_a_job(clock: FakeClock, **options: Any) -> BatchAPIOptions:
    return options_on(clock, max_requests_per_job=5, **options)


# --------------------------------------------------------------------------- end to end


async def test_ten_jobs_under_an_enqueued_cap_all_finish_and_none_fails_for_it(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = limited_server(batch_server_on)
    runner = BatchAPIRunner(llm_for(server), options=five_a_job(batch_clock, max_resubmits=0))

    results = await runner.arun(prompts(50))

    assert [r.output.content for r in results if r.output] == [f"echo: {p}" for p in prompts(50)]
    assert all(r.ok and r.attempts == 1 for r in results)
    stats = server.stats()
    assert stats.max_enqueued_tokens <= LIMIT
    assert stats.batches_created - stats.enqueued_token_refusals == 10


async def test_a_cap_is_learned_from_the_first_refusal_and_no_job_is_refused_after(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = limited_server(batch_server_on)
    runner = BatchAPIRunner(llm_for(server), options=five_a_job(batch_clock))

    results = await runner.arun(prompts(50))

    assert all(r.ok for r in results)
    # the first round of creations: 3 jobs fit, 7 are refused; once the limit is
    # known, later jobs wait for room instead
    assert server.stats().enqueued_token_refusals == 7
    assert server.stats().batches_created == 17


async def test_a_refused_jobs_items_keep_their_submission_count(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = limited_server(batch_server_on)
    options = five_a_job(batch_clock, max_resubmits=0)

    results = await BatchAPIRunner(llm_for(server), options=options).arun(prompts(50))

    assert server.stats().enqueued_token_refusals > 0
    assert {(r.attempts, r.history) for r in results} == {(1, ())}


async def test_a_known_cap_avoids_every_refusal_and_keeps_the_queue_full(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = limited_server(batch_server_on)
    options = five_a_job(batch_clock, max_enqueued_tokens={"gpt-4o-mini": LIMIT})

    results = await BatchAPIRunner(llm_for(server), options=options).arun(prompts(50))

    assert all(r.ok for r in results)
    stats = server.stats()
    assert (stats.enqueued_token_refusals, stats.batches_created) == (0, 10)
    assert stats.max_enqueued_tokens == LIMIT


async def test_jobs_are_planned_within_the_cap_when_one_job_would_exceed_it(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = limited_server(batch_server_on)
    options = options_on(batch_clock, max_enqueued_tokens=LIMIT)  # no request limit per job

    results = await BatchAPIRunner(llm_for(server), options=options).arun(prompts(40))

    assert all(r.ok for r in results)
    assert (server.stats().enqueued_token_refusals, server.stats().batches_created) == (0, 3)


async def test_a_job_over_a_learned_cap_is_split_smaller(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = limited_server(batch_server_on)

    results = await BatchAPIRunner(llm_for(server), options=options_on(batch_clock)).arun(
        prompts(40)
    )

    assert all(r.ok and r.attempts == 1 for r in results)
    # one job of 400 tokens refused, then jobs of at most 150
    assert server.stats().enqueued_token_refusals == 1
    assert server.stats().batches_created == 1 + 3


async def test_waiting_jobs_sleep_with_the_polling_backoff_and_say_why(
    batch_server_on: Any, batch_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = limited_server(batch_server_on)
    options = five_a_job(batch_clock, max_enqueued_tokens=LIMIT)
    caplog.set_level(logging.INFO, logger="langchain_batchkit._batch_api._queue")

    await BatchAPIRunner(llm_for(server), options=options).arun(prompts(20))

    waits = [r.getMessage() for r in caplog.records if "waits for the enqueued-token" in r.message]
    assert len(waits) == 1  # said once, at INFO; later polls at DEBUG
    assert "job-00004 (5 requests, 50 prompt tokens)" in waits[0]
    assert "150 tokens enqueued by open jobs + 50 of this job > cap 150" in waits[0]
    # every wait was a poll of the usual backoff; none was shorter than the first
    assert min(batch_clock.sleeps) == 10.0


def test_a_sync_run_goes_through_the_queue_too(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = limited_server(batch_server_on)
    options = five_a_job(batch_clock, max_enqueued_tokens=LIMIT)

    results = BatchAPIRunner(llm_for(server), options=options).run(prompts(25))

    assert all(r.ok for r in results)
    assert server.stats().enqueued_token_refusals == 0
    assert server.stats().max_enqueued_tokens == LIMIT


async def test_two_runners_sharing_a_queue_file_stay_under_the_cap_together(
    batch_server_on: Any, batch_clock: FakeClock, tmp_path: Path
) -> None:
    server = limited_server(batch_server_on)
    options = five_a_job(
        batch_clock, max_enqueued_tokens=LIMIT, queue_path=tmp_path / "queue.sqlite"
    )
    first = BatchAPIRunner(llm_for(server), options=options, state_path=tmp_path / "a.sqlite")
    second = BatchAPIRunner(llm_for(server), options=options)

    results = await asyncio.gather(first.arun(prompts(25, "a")), second.arun(prompts(25, "b")))

    assert all(r.ok for result in results for r in result)
    stats = server.stats()
    assert (stats.enqueued_token_refusals, stats.batches_created) == (0, 10)
    assert stats.max_enqueued_tokens == LIMIT
    assert QueueStore(tmp_path / "queue.sqlite").entries() == []


async def test_two_runners_with_queues_of_their_own_are_refused_yet_finish(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = limited_server(batch_server_on)
    options = five_a_job(batch_clock, max_enqueued_tokens=LIMIT, max_resubmits=0)
    runners = [BatchAPIRunner(llm_for(server), options=options) for _ in range(2)]

    runs = (runner.arun(prompts(25, head)) for runner, head in zip(runners, "ab", strict=True))
    results = await asyncio.gather(*runs)

    assert all(r.ok and r.attempts == 1 for result in results for r in result)
    assert server.stats().enqueued_token_refusals > 0
    assert server.stats().max_enqueued_tokens <= LIMIT


async def test_a_resumed_run_takes_its_queue_entries_back_and_releases_them(
    batch_server_on: Any, batch_clock: FakeClock, tmp_path: Path
) -> None:
    server = limited_server(batch_server_on)
    state = tmp_path / "jobs.sqlite"

    async def crash(seconds: float) -> None:
        raise Crash("the process died while waiting")

    dying = BatchAPIOptions(
        sleep=crash, clock=batch_clock, max_requests_per_job=5, max_enqueued_tokens=LIMIT
    )
    with pytest.raises(Crash):
        await BatchAPIRunner(llm_for(server), options=dying, state_path=state).arun(prompts(25))
    left = QueueStore(state).entries()
    assert [(e.job, e.tokens, e.state) for e in left] == [
        (f"job-0000{n}", JOB, "enqueued") for n in (1, 2, 3)
    ]

    options = five_a_job(batch_clock, max_enqueued_tokens=LIMIT)
    results = await BatchAPIRunner(llm_for(server), options=options, state_path=state).arun(
        prompts(25)
    )

    assert all(r.ok for r in results)
    assert (server.stats().batches_created, server.stats().enqueued_token_refusals) == (5, 0)
    assert QueueStore(state).entries() == []


async def test_a_single_request_over_a_known_cap_fails_alone_without_being_sent(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = limited_server(batch_server_on)
    options = options_on(batch_clock, max_enqueued_tokens=LIMIT)

    results = await BatchAPIRunner(llm_for(server), options=options).arun(
        ["short", "long " * 400, "brief"]
    )

    assert [r.ok for r in results] == [True, False, True]
    error = results[1].error
    assert error is not None and isinstance(error.exception, BatchRequestError)
    assert error.exception.code == "token_limit_exceeded"
    assert "cap of gpt-4o-mini is 150 (max_enqueued_tokens)" in error.message
    assert server.stats().enqueued_token_refusals == 0


async def test_a_single_request_refused_with_nothing_else_enqueued_fails_alone(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = limited_server(batch_server_on)

    results = await BatchAPIRunner(
        llm_for(server), options=options_on(batch_clock, max_requests_per_job=1)
    ).arun(["long " * 400, "short"])

    assert [r.ok for r in results] == [False, True]
    error = results[0].error
    assert error is not None and "Limit: 150 enqueued tokens" in error.message
    assert results[0].attempts == 1


async def test_a_provider_counting_more_tokens_than_we_do_still_finishes_every_item(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    # the server's "chars" tokenizer counts "prompt 7" as 3 + 4 + 2 = 9 and
    # "prompt 17" as 10, so the runner's count is not the provider's
    server = limited_server(batch_server_on, tokenizer="chars", batch_max_enqueued_tokens=120)
    options = five_a_job(batch_clock, max_resubmits=0)

    results = await BatchAPIRunner(llm_for(server), options=options).arun(prompts(50))

    assert all(r.ok and r.attempts == 1 for r in results)
    assert server.stats().max_enqueued_tokens <= 120


async def test_a_create_call_refused_for_the_cap_is_sent_again_uncounted(
    batch_server_on: Any, batch_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = limited_server(batch_server_on)
    create = OpenAIBatches.create
    calls = iter(range(1, 100))

    async def refuse_the_fourth(self: OpenAIBatches, *args: Any, **kwargs: Any) -> Any:
        if next(calls) == 4:  # three jobs of 50 tokens are enqueued
            request = httpx2.Request("POST", f"{server.base_url}/batches")
            raise openai.BadRequestError(
                "Enqueued token limit reached for gpt-4o-mini. Limit: 150 enqueued tokens.",
                response=httpx2.Response(400, request=request),
                body={"code": "token_limit_exceeded"},
            )
        return await create(self, *args, **kwargs)

    monkeypatch.setattr(OpenAIBatches, "create", refuse_the_fourth)
    options = five_a_job(batch_clock, max_resubmits=0)

    results = await BatchAPIRunner(llm_for(server), options=options).arun(prompts(50))

    assert all(r.ok and r.attempts == 1 for r in results)
    # learned from the call: later jobs waited instead of being refused by the server
    assert (server.stats().enqueued_token_refusals, server.stats().batches_created) == (0, 10)


async def test_embedding_jobs_wait_for_the_queue_too(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = limited_server(batch_server_on, embedding_dimensions=8)
    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-small",
        base_url=server.base_url,
        api_key=SecretStr(API_KEY),
        max_retries=0,
        check_embedding_ctx_length=False,
    )
    batch = BatchEmbeddings(embeddings, options=five_a_job(batch_clock, max_resubmits=0))

    report = await batch.arun([f"text number {i}" for i in range(60)])

    assert (report.embedded, report.failed) == (60, 0)
    assert server.stats().max_enqueued_tokens <= LIMIT
    assert server.stats().enqueued_token_refusals > 0


# --------------------------------------------------------------------------- the decisions


CAP = Cap(100, exact=True, source="max_enqueued_tokens")
GUESS = Cap(100, exact=False, source="inferred from a refusal")


@pytest.mark.parametrize(
    ("tokens", "requests", "enqueued", "cap", "decision"),
    [
        (40, 4, 60, CAP, "admit"),  # exactly fills the cap
        (41, 4, 60, CAP, "wait"),
        (100, 4, 0, CAP, "admit"),
        (101, 4, 0, CAP, "split"),  # a job alone over the cap
        (101, 1, 0, CAP, "too_large"),  # one request over an exact cap never fits
        (101, 1, 0, GUESS, "admit"),  # over a guess: tried alone
        (101, 1, 5, GUESS, "wait"),
        (10**9, 9, 10**9, None, "admit"),  # no cap known
    ],
)
def test_admission_decisions(
    tokens: int, requests: int, enqueued: int, cap: Cap | None, decision: str
) -> None:
    verdict = admit(tokens=tokens, requests=requests, enqueued=enqueued, cap=cap)

    assert verdict.decision == decision
    assert verdict.admitted == (decision == "admit")


def test_a_waiting_verdict_says_why() -> None:
    verdict = admit(tokens=41, requests=4, enqueued=60, cap=CAP)

    assert verdict.reason() == (
        "60 tokens enqueued by open jobs + 41 of this job > cap 100 (max_enqueued_tokens)"
    )


OPENAI_REFUSAL = (
    "Enqueued token limit reached for gpt-4o-mini in organization org-x. Limit: 90,000 "
    "enqueued tokens. Please try submitting fewer tasks or waiting for the others to finish."
)


def test_the_providers_limit_is_learned_exactly_when_it_explains_the_refusal() -> None:
    assert learn(None, message=OPENAI_REFUSAL, ahead=80_000, tokens=20_000) == Cap(
        90_000, exact=True, source="the provider's refusal"
    )


def test_without_a_limit_in_the_message_the_cap_is_what_was_enqueued() -> None:
    cap = learn(None, message="Enqueued token limit reached", ahead=80_000, tokens=20_000)

    assert (cap.tokens, cap.exact) == (80_000, False)


def test_a_job_refused_alone_teaches_half_its_size() -> None:
    cap = learn(None, message="Enqueued token limit reached", ahead=0, tokens=50_000)

    assert (cap.tokens, cap.exact) == (25_000, False)


def test_a_limit_our_count_says_was_not_reached_gives_a_guess_below_it() -> None:
    # another user of the organisation, or a tokenizer that counts differently
    cap = learn(None, message=OPENAI_REFUSAL, ahead=40_000, tokens=20_000)

    assert (cap.tokens, cap.exact) == (40_000, False)
    assert cap.tokens < 40_000 + 20_000  # the same job never goes again into the same queue


def test_a_guess_never_raises_an_earlier_lower_cap() -> None:
    earlier = Cap(30_000, exact=False, source="inferred from a refusal")

    assert learn(earlier, message="limit", ahead=50_000, tokens=10_000) is earlier
    assert learn(earlier, message=OPENAI_REFUSAL, ahead=85_000, tokens=10_000).tokens == 90_000


@pytest.mark.parametrize(
    ("message", "limit"),
    [
        (OPENAI_REFUSAL, 90_000),
        ("Limit: 2000000 enqueued tokens", 2_000_000),
        ("limit:1_500 tokens", 1_500),
        ("Enqueued token limit reached for gpt-4o.", None),
        ("Limit: 0 enqueued tokens", None),
    ],
)
def test_the_limit_is_read_from_the_refusal_message(message: str, limit: int | None) -> None:
    assert limit_in(message) == limit


def test_refusals_are_told_by_code_or_message() -> None:
    assert is_refusal("token_limit_exceeded", "")
    assert is_refusal(None, OPENAI_REFUSAL)
    assert not is_refusal("too_many_tasks", "The batch input file has 60000 requests")


def test_the_tighter_of_two_caps_wins() -> None:
    low = Cap(10, exact=False, source="inferred from a refusal")

    assert tighter(CAP, low) is low
    assert tighter(None, CAP) is CAP
    assert tighter(None, None) is None


def test_prompt_tokens_count_chat_embeddings_images_and_tool_arguments() -> None:
    chat = (
        '{"model": "local", "messages": [{"role": "system", "content": "12345678"}, '
        '{"role": "user", "content": [{"type": "text", "text": "1234"}, '
        '{"type": "image_url", "image_url": {"url": "x"}}]}, {"role": "assistant", '
        '"content": null, "tool_calls": [{"function": {"arguments": "{}  "}}]}]}'
    )
    # 3 to prime the reply, 4 a message; texts at 4 characters a token; 255 an image
    assert prompt_tokens(chat) == ("local", 3 + 4 * 3 + 2 + 1 + 255 + 1)
    assert prompt_tokens('{"model": "local", "input": ["12345678", "1234"]}') == ("local", 3)
    assert prompt_tokens("not json") == ("", 0)


def test_jobs_are_planned_within_a_token_budget_and_an_oversized_line_goes_alone() -> None:
    sizes = [(cid, 1) for cid in "abcde"]
    tokens = {"a": 40, "b": 40, "c": 40, "d": 300, "e": 10}

    planned = plan_jobs(sizes, max_requests=10, max_bytes=100, tokens=tokens, max_tokens=100)

    assert planned == ([["a", "b"], ["c"], ["d"], ["e"]], [])


def test_withdrawing_an_item_undoes_its_submission_and_keeps_its_history() -> None:
    state = ItemState(0, "digest")
    state.submit("job-00001")
    state.fail(ConnectionError("reset"), max_resubmits=2, now=0.0)
    earlier = state.error
    state.submit("job-00002")

    state.withdraw()

    assert (state.status, state.submissions, state.history) == ("pending", 1, [])
    assert state.error == earlier and isinstance(state.error, ItemError)


# --------------------------------------------------------------------------- the shared state


def admit_job(store: QueueStore, owner: str, job: str, tokens: int, *, now: float = 0.0) -> str:
    return store.admit(
        owner=owner, job=job, model="m", tokens=tokens, requests=5, configured=CAP, now=now
    ).decision


def test_two_connections_to_one_file_never_take_the_same_room(tmp_path: Path) -> None:
    first, second = QueueStore(tmp_path / "q.sqlite"), QueueStore(tmp_path / "q.sqlite")

    assert admit_job(first, "run-a", "job-1", 60) == "admit"
    assert admit_job(second, "run-b", "job-1", 60) == "wait"
    first.release(owner="run-a", job="job-1")
    assert admit_job(second, "run-b", "job-1", 60) == "admit"


def test_runners_in_threads_never_hold_more_than_the_cap_together(tmp_path: Path) -> None:
    # four runners ask at once, round after round, for 30 tokens each under a cap
    # of 100: every round exactly three get room, never four
    rounds, barrier = 20, threading.Barrier(4)
    admitted: list[list[str]] = [[] for _ in range(rounds)]

    def runner(name: str) -> None:
        store = QueueStore(tmp_path / "q.sqlite")
        try:
            for n in range(rounds):
                if admit_job(store, name, f"job-{n}", 30) == "admit":
                    admitted[n].append(name)
                barrier.wait()
                store.release(owner=name, job=f"job-{n}")
                barrier.wait()
        finally:
            store.close()

    QueueStore(tmp_path / "q.sqlite").close()  # the tables exist before the race
    threads = [threading.Thread(target=runner, args=(f"run-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [len(names) for names in admitted] == [3] * rounds
    assert QueueStore(tmp_path / "q.sqlite").entries() == []


def test_a_dead_runners_jobs_lapse_after_the_completion_window(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "q.sqlite")
    admit_job(store, "run-dead", "job-1", 60)
    store.created(owner="run-dead", job="job-1", model="m", tokens=60, now=0.0)
    admit_job(store, "run-dead", "job-2", 40)  # reserved, never created

    assert admit_job(store, "run-b", "job-1", 40, now=RESERVED_FOR - 1) == "wait"
    assert admit_job(store, "run-b", "job-1", 40, now=RESERVED_FOR) == "admit"
    assert admit_job(store, "run-c", "job-1", 60, now=ENQUEUED_FOR - 1) == "wait"
    assert admit_job(store, "run-c", "job-1", 60, now=ENQUEUED_FOR) == "admit"


def test_a_resuming_run_keeps_its_open_jobs_and_drops_the_rest(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "q.sqlite")
    for job in ("job-1", "job-2"):
        admit_job(store, "run-a", job, 30)

    store.adopt(owner="run-a", jobs={"job-2": ("m", 30, True), "job-3": ("m", 20, False)}, now=5)

    assert [(e.job, e.tokens, e.ahead, e.state) for e in store.entries()] == [
        ("job-2", 30, 30, "enqueued"),  # created, its id saved just before the crash
        ("job-3", 20, 30, "reserved"),  # half-created: adopted, found or created again
    ]


def test_a_refusal_is_learned_for_every_runner_of_the_queue_and_lapses(tmp_path: Path) -> None:
    first, second = QueueStore(tmp_path / "q.sqlite"), QueueStore(tmp_path / "q.sqlite")
    first.admit(owner="a", job="j", model="m", tokens=80, requests=8, configured=None, now=0)

    cap, ahead = first.refused(owner="a", job="j", model="m", tokens=80, message="Limit: 50", now=0)

    assert (cap.tokens, ahead, first.entries()) == (50, 0, [])
    assert second.learned("m", now=LEARNED_FOR - 1) == cap
    assert second.learned("m", now=LEARNED_FOR) is None


def test_an_unusable_queue_file_is_refused_naming_it(tmp_path: Path) -> None:
    from langchain_batchkit._batch_api import BatchStateError

    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(BatchStateError, match="queue file"):
        QueueStore(tmp_path / "a-file" / "q.sqlite")


def test_a_queue_path_under_home_and_missing_folders_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    options = BatchAPIOptions(queue_path="~/.batchkit/queue.sqlite")

    QueueStore(options.queue_path).close()

    assert (tmp_path / ".batchkit" / "queue.sqlite").exists()


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_enqueued_tokens": 0}, "max_enqueued_tokens"),
        ({"max_enqueued_tokens": True}, "max_enqueued_tokens"),
        ({"max_enqueued_tokens": 1.5}, "max_enqueued_tokens"),
        ({"max_enqueued_tokens": {"gpt-4o": 0}}, r"max_enqueued_tokens\['gpt-4o'\]"),
        ({"max_enqueued_tokens": {"": 10}}, "max_enqueued_tokens"),
        ({"queue_path": 42}, "queue_path"),
        ({"queue_path": ""}, "queue_path"),
    ],
)
def test_bad_queue_options_fail_at_construction_naming_the_field(
    options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigurationError, match=field):
        BatchAPIOptions(**options)


def test_the_cap_is_one_for_every_model_or_one_per_model(tmp_path: Path) -> None:
    everyone = BatchAPIOptions(max_enqueued_tokens=90_000, queue_path=tmp_path / "q.sqlite")
    per_model = BatchAPIOptions(max_enqueued_tokens={"gpt-4o": 90_000})

    assert (everyone.enqueued_cap("gpt-4o"), everyone.enqueued_cap("o3")) == (90_000, 90_000)
    assert (per_model.enqueued_cap("gpt-4o"), per_model.enqueued_cap("o3")) == (90_000, None)
    assert everyone.queue_path == str(tmp_path / "q.sqlite")


def test_a_bad_server_limit_fails_naming_the_field() -> None:
    with pytest.raises(ConfigurationError, match="batch_max_enqueued_tokens"):
        FakeServerConfig(batch_max_enqueued_tokens=0)


# --------------------------------------------------------------------------- found in review


def _fill_queue(path: str, *, owner: str, batch_id: str, tokens: int) -> None:
    """Another runner's open job in the queue file (as created() leaves it)."""
    store = QueueStore(path)
    try:
        store.created(
            owner=owner, job="job-00001", model="gpt-4o-mini", tokens=tokens, now=0.0,
            batch_id=batch_id,
        )  # fmt: skip
    finally:
        store.close()


async def test_an_interrupted_runners_ended_job_leaves_the_queue_within_minutes(
    batch_server_on: Any, batch_clock: FakeClock, tmp_path: Path
) -> None:
    server = batch_server_on(batch_completion_delay=100.0, tokenizer="model")
    ended = await BatchAPIRunner(llm_for(server), options=options_on(batch_clock)).arun(["x"])
    assert ended[0].ok
    queue = str(tmp_path / "queue.sqlite")
    # a run interrupted (Ctrl-C, no state file) left its job's row: it fills the cap
    _fill_queue(queue, owner="run-gone", batch_id="batch_fake000000000001", tokens=100)
    options = options_on(batch_clock, max_enqueued_tokens=100, queue_path=queue)
    started = batch_clock()

    results = await BatchAPIRunner(llm_for(server), options=options).arun(prompts(3))

    assert all(r.ok for r in results)
    assert batch_clock() - started < 3600  # not the row's 25 h expiry


async def test_a_resumed_job_that_was_never_created_goes_through_the_queue(
    batch_server_on: Any, batch_clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = batch_server_on(batch_completion_delay=5000.0, tokenizer="model")
    queue, state = str(tmp_path / "queue.sqlite"), tmp_path / "a.sqlite"
    options = options_on(batch_clock, max_enqueued_tokens=100, queue_path=queue)
    create = OpenAIBatches.create

    async def die(self: OpenAIBatches, **kwargs: Any) -> Any:
        raise Crash("killed before the create call")

    monkeypatch.setattr(OpenAIBatches, "create", die)
    with pytest.raises(Crash):
        await BatchAPIRunner(llm_for(server), options=options, state_path=state).arun(prompts(3))
    monkeypatch.setattr(OpenAIBatches, "create", create)
    batch_clock.advance(3700)  # the crashed run's reservation lapsed
    other = await BatchAPIRunner(llm_for(server), options=options_on(batch_clock)).arun(["y"])
    assert other[0].ok  # a batch that ran: now make it look open and filling the queue
    _fill_queue(queue, owner="run-other", batch_id="batch_fake000000000001", tokens=100)
    peaks: list[int] = []
    created = QueueStore.created

    def watch(self: QueueStore, **kwargs: Any) -> None:
        created(self, **kwargs)
        peaks.append(sum(e.tokens for e in self.entries()))

    monkeypatch.setattr(QueueStore, "created", watch)

    results = await BatchAPIRunner(llm_for(server), options=options, state_path=state).arun(
        prompts(3)
    )

    assert all(r.ok for r in results)
    assert peaks and max(peaks) <= 100  # never created on top of the other's 100 tokens
