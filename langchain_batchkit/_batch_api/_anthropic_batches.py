"""Anthropic's Message Batches calls of a run, as a :class:`JobClient`.

Unlike OpenAI, a Message Batch takes its requests in the create call itself
(``{"custom_id", "params"}`` each) and has no metadata; results are one JSONL
stream read from the batch's ``results_url`` once ``processing_status`` is
``ended``, each line ``succeeded`` (a ``message``), ``errored``, ``expired`` or
``canceled``.

The client is a new ``AsyncAnthropic`` with the model's own client settings (key,
base URL, headers, timeout, retries) and a new HTTP client, closed when the run
ends. ChatAnthropic's async client sits on an HTTP client langchain-anthropic
caches per process, whose connections belong to the event loop that opened them:
a sync run's job I/O, on a private loop, must not use it, and an async run does
not need to. The key stays inside the SDK client; nothing here reads or logs it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, cast

import anthropic
import httpx2
from anthropic.types.messages import MessageBatch

from langchain_batchkit._batch_api._errors import BatchRequestError, unfinished_error
from langchain_batchkit._batch_api._jobapi import JobView, LineOutcome

if TYPE_CHECKING:
    from langchain_anthropic import ChatAnthropic

__all__ = ["MAX_BYTES", "MAX_REQUESTS", "AnthropicBatches", "anthropic_view", "parse_results"]

logger = logging.getLogger(__name__)

#: Anthropic's per-batch limits: 100,000 requests, 256 MB (read as 10^6 bytes, the
#: smaller reading, less room for the create call's own few bytes of JSON).
MAX_REQUESTS: Final = 100_000
MAX_BYTES: Final = 256_000_000 - 1024
#: How much earlier than the run's own record of "just before creating it" a batch
#: may be stamped and still be taken for the job's (clock skew, a lagging fake clock).
FIND_SLACK: Final = 300.0


class AnthropicBatches:
    """Create, retrieve, read, cancel and find Message Batches; an async context manager.

    Args:
        client: the SDK client the calls go through, closed on exit.
        scan: most batches :meth:`find` looks through, newest first.

    Example:
        >>> async with AnthropicBatches.for_model(llm) as api:  # doctest: +SKIP
        ...     job = await api.retrieve("msgbatch_abc")          # doctest: +SKIP
    """

    #: custom_ids carry the run's tag: without job metadata, a batch found after a crash
    #: is recognised as this run's by its results (see ``JobLoop``).
    unique_ids = True

    __slots__ = ("_claimed", "_client", "_scan", "max_bytes", "max_requests")

    def __init__(self, client: anthropic.AsyncAnthropic, *, scan: int = 1000) -> None:
        self._client = client
        self._scan = scan
        self._claimed: set[str] = set()
        self.max_requests = MAX_REQUESTS
        self.max_bytes = MAX_BYTES

    @classmethod
    def for_model(cls, model: ChatAnthropic) -> AnthropicBatches:
        """A client with the model's settings and an HTTP client of its own (see above)."""
        params = dict(model._client_params)
        http: dict[str, Any] = {}
        if "timeout" in params:
            http["timeout"] = params["timeout"]
        if model.anthropic_proxy:
            http["proxy"] = model.anthropic_proxy
        client = anthropic.AsyncAnthropic(
            **params, http_client=anthropic.DefaultAsyncHttpxClient(**http)
        )
        return cls(client)

    def __repr__(self) -> str:
        return f"AnthropicBatches(base_url={str(self._client.base_url)!r})"

    async def __aenter__(self) -> AnthropicBatches:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.close()

    def line(self, custom_id: str, body_json: str) -> bytes:
        head = json.dumps(custom_id, ensure_ascii=False)
        return f'{{"custom_id":{head},"params":{body_json}}}\n'.encode()

    async def create(
        self,
        *,
        name: str,
        lines: Sequence[bytes],
        input_file_id: str | None,
        metadata: Mapping[str, str],
        on_upload: Callable[[str], None],
    ) -> JobView:
        """Create a batch of ``lines``: no upload, the requests go in the call itself.

        A request's ``betas`` (langchain-anthropic adds them for some tools and
        features) are a header of the whole batch here, so every request of a job
        must carry the same ones.

        Raises:
            BatchRequestError: the job's requests ask for different betas.
        """
        requests = [json.loads(line) for line in lines]
        betas = {tuple(request["params"].pop("betas", None) or ()) for request in requests}
        if len(betas) > 1:
            shown = "; ".join(sorted(", ".join(b) or "(none)" for b in betas))
            raise BatchRequestError(
                f"the requests of one batch ask for different betas ({shown}); a Message "
                "Batch takes one set of betas for all its requests: bind the same betas "
                "(and beta tools) for every input",
                code="mixed_betas",
            )
        [chosen] = betas or {()}
        # no SDK retry: a create whose answer was lost may have made the batch, and the
        # loop looks for it (find) before it creates again; a retry would pay twice
        client = self._client.with_options(max_retries=0)
        if chosen:
            batch: Any = await client.beta.messages.batches.create(
                requests=cast(Any, requests), betas=list(chosen)
            )
        else:
            batch = await client.messages.batches.create(requests=cast(Any, requests))
        self._claimed.add(batch.id)
        return anthropic_view(batch)

    async def retrieve(self, job_id: str) -> JobView:
        return anthropic_view(await self._client.messages.batches.retrieve(job_id))

    async def results(self, job: JobView) -> list[LineOutcome]:
        batch: MessageBatch = job.handle
        url = batch.results_url or f"/v1/messages/batches/{batch.id}/results"
        response = await self._client.get(
            url, cast_to=httpx2.Response, options={"headers": {"Accept": "application/binary"}}
        )
        status = anthropic_view(batch).outcome or batch.processing_status
        return list(parse_results(response.content, batch_id=batch.id, status=status))

    async def cancel(self, job_id: str) -> bool:
        try:
            batch = await self._client.messages.batches.cancel(job_id)
        except anthropic.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code == 429:
                raise
            # refused: fine if it had ended (nothing to cancel), else the refusal stands
            batch = await self._client.messages.batches.retrieve(job_id)
            if batch.processing_status == "ended" and batch.cancel_initiated_at is None:
                return False
            raise
        return batch.cancel_initiated_at is not None

    async def find(
        self,
        metadata: Mapping[str, str],
        *,
        requests: int,
        created_after: float | None,
        known: frozenset[str] = frozenset(),
    ) -> JobView | None:
        """The newest batch of ``requests`` requests created at ``created_after`` or later.

        Message Batches have no metadata, so a batch is recognized by its request
        count and its creation time (less :data:`FIND_SLACK`), skipping batches this
        client created or found already and those of ``known`` (every batch the run's
        state file holds, so an earlier job of the same run is never taken). The
        residual risk: another batch of the same size, created in that window with the
        same key by another process, is taken for this job's; its results then carry
        custom_ids this job did not send (ignored, and the job's items fail as not run)
        or, for another run of the same inputs, answers to the same requests.
        """
        since = None if created_after is None else created_after - FIND_SLACK
        seen = 0
        async for batch in self._client.messages.batches.list(limit=100):
            seen += 1
            if since is not None and _unix(batch.created_at) < since:
                break  # newest first: the rest are older still
            if batch.id not in self._claimed | known and _total(batch) == requests:
                self._claimed.add(batch.id)
                return anthropic_view(batch)
            if seen >= self._scan:
                break
        return None


def anthropic_view(batch: MessageBatch) -> JobView:
    """A Message Batch as the loop sees it: final once ``ended``.

    Its outcome is ``completed``, or ``cancelled`` when a cancel was asked (the
    results then say which requests ran); requests that expired say so in their
    own result lines.
    """
    final = batch.processing_status == "ended"
    outcome = None
    if final:
        outcome = "cancelled" if batch.cancel_initiated_at is not None else "completed"
    return JobView(
        id=batch.id, status=batch.processing_status, final=final, outcome=outcome, handle=batch
    )


def parse_results(data: bytes, *, batch_id: str, status: str) -> Iterator[LineOutcome]:
    """The outcomes in a batch's results JSONL, one per well-formed line.

    ``succeeded`` yields the message; ``errored`` a :class:`BatchRequestError` naming
    the error type (``api_error`` and ``overloaded_error`` are sent again,
    ``invalid_request_error`` is not); ``expired`` and ``canceled`` a
    :class:`BatchJobUnfinishedError` (expired ones are sent again).

    Example:
        >>> line = b'{"custom_id": "0-1", "result": {"type": "expired"}}'
        >>> next(parse_results(line, batch_id="b", status="completed")).error.status
        'expired'
    """
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            custom_id, result = record["custom_id"], record["result"]
            kind = result["type"]
        except (ValueError, KeyError, TypeError):
            logger.warning("batch %s: skipping unreadable result line %d", batch_id, number)
            continue
        if not isinstance(custom_id, str):
            logger.warning(
                "batch %s: skipping result line %d without a custom_id", batch_id, number
            )
            continue
        yield _outcome(custom_id, kind, result, batch_id=batch_id, status=status)


def _outcome(
    custom_id: str, kind: object, result: Mapping[str, Any], *, batch_id: str, status: str
) -> LineOutcome:
    if kind == "succeeded" and isinstance(result.get("message"), Mapping):
        return LineOutcome(custom_id, body=result["message"])
    if kind == "errored":
        wrapper = result.get("error")
        error = wrapper.get("error") if isinstance(wrapper, Mapping) else None
        error = error if isinstance(error, Mapping) else {}
        code = error.get("type") if isinstance(error.get("type"), str) else "api_error"
        message = str(error.get("message") or "the request failed")
        return LineOutcome(custom_id, error=unfinished_error(code, message, batch_id, status))
    if kind == "expired":
        message = "this request expired before it ran (the batch's 24-hour window ended)"
        return LineOutcome(custom_id, error=unfinished_error("expired", message, batch_id, status))
    if kind == "canceled":
        message = "this request was canceled before it ran"
        return LineOutcome(custom_id, error=unfinished_error("canceled", message, batch_id, status))
    message = f"unexpected result type {kind!r}"
    return LineOutcome(custom_id, error=unfinished_error(None, message, batch_id, status))


def _total(batch: MessageBatch) -> int:
    counts = batch.request_counts
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired


def _unix(moment: datetime) -> float:
    return moment.timestamp()
