"""The OpenAI Files and Batches calls of a run, as a :class:`JobClient`, through the model's client.

The client is a copy of the model's ``root_async_client`` (same key, base URL,
organization, headers, timeout and retries; an ``AzureChatOpenAI`` brings an
``AsyncAzureOpenAI``, whose routes and ``api-version`` the SDK adds), given a
fresh HTTP connection pool for the run: a run's event loop must not reuse
connections opened on another loop. An async run on the caller's loop uses the
model's own ``http_async_client`` when it brought one (it belongs to that loop);
a sync run, whose job I/O runs on a private loop, never does. The key stays
inside the client; nothing here reads or logs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import openai
from openai.types import Batch

from langchain_batchkit._batch_api._jobapi import JobView, LineOutcome
from langchain_batchkit._batch_api._requests import ENDPOINT
from langchain_batchkit._batch_api._responses import parse_lines

__all__ = ["OpenAIBatches", "openai_view"]

#: OpenAI's per-job limits (Azure OpenAI's global batches take 100,000 requests).
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
_FINAL = {"completed", "expired", "cancelled", "failed"}


class OpenAIBatches:
    """Upload, create, retrieve, download, cancel and find jobs; an async context manager.

    Args:
        client: the SDK client the calls go through.
        owned: close it on exit (it was made for this run).
        endpoint: the URL of every request line and job (``/v1/chat/completions``,
            ``/v1/embeddings``; Azure OpenAI: ``/chat/completions``).
        max_requests: the provider's most requests per job.

    Example:
        >>> async with OpenAIBatches.for_model(llm) as api:     # doctest: +SKIP
        ...     job = await api.retrieve("batch_abc")            # doctest: +SKIP
    """

    #: OpenAI jobs carry metadata: custom_ids need no run tag.
    unique_ids = False

    __slots__ = ("_client", "_endpoint", "_owned", "max_bytes", "max_requests")

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        owned: bool,
        endpoint: str = ENDPOINT,
        max_requests: int = MAX_REQUESTS,
    ) -> None:
        self._client = client
        self._owned = owned
        self._endpoint = endpoint
        self.max_requests = max_requests
        self.max_bytes = MAX_BYTES

    @classmethod
    def for_model(
        cls, model: Any, *, private_loop: bool = False, endpoint: str = ENDPOINT
    ) -> OpenAIBatches:
        """The model's client settings with a connection pool fit for the current loop.

        Args:
            model: the ChatOpenAI whose key, base URL and client settings are used.
            private_loop: the calls run on a private loop (a sync run), so the model's
                own ``http_async_client``, bound to the caller's loop, is never used: a
                fresh default one is made (its proxy or TLS settings do not apply).
            endpoint: the URL of every request line and job.
        """
        return cls.for_client(
            model.root_async_client,
            model.http_async_client,
            private_loop=private_loop,
            endpoint=endpoint,
        )

    @classmethod
    def for_client(
        cls,
        root: openai.AsyncOpenAI,
        http_async_client: object,
        *,
        private_loop: bool = False,
        endpoint: str = ENDPOINT,
        max_requests: int = MAX_REQUESTS,
    ) -> OpenAIBatches:
        """:meth:`for_model` from a model's client and its own ``http_async_client``
        (``OpenAIEmbeddings`` keeps them as ``ChatOpenAI`` does, under other names)."""
        if http_async_client is not None and not private_loop:
            return cls(root, owned=False, endpoint=endpoint, max_requests=max_requests)
        client = root.copy(http_client=openai.DefaultAsyncHttpxClient())
        return cls(client, owned=True, endpoint=endpoint, max_requests=max_requests)

    async def __aenter__(self) -> OpenAIBatches:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._owned:
            await self._client.close()

    def line(self, custom_id: str, body_json: str) -> bytes:
        head = json.dumps(custom_id, ensure_ascii=False)
        url = json.dumps(self._endpoint)
        return f'{{"custom_id":{head},"method":"POST","url":{url},"body":{body_json}}}\n'.encode()

    async def create(
        self,
        *,
        name: str,
        lines: Sequence[bytes],
        input_file_id: str | None,
        metadata: Mapping[str, str],
        on_upload: Callable[[str], None],
    ) -> JobView:
        if input_file_id is None:
            uploaded = await self._client.files.create(
                file=(f"{name}.jsonl", b"".join(lines)), purpose="batch"
            )
            input_file_id = uploaded.id
            on_upload(input_file_id)
        # no SDK retry: a create whose answer was lost may have made the job, and the
        # loop looks for it (find) before it creates again; a retry would pay twice
        batch = await self._client.with_options(max_retries=0).batches.create(
            input_file_id=input_file_id,
            endpoint=self._endpoint,  # type: ignore[arg-type]
            completion_window="24h",
            metadata=dict(metadata),
        )
        return openai_view(batch)

    async def retrieve(self, job_id: str) -> JobView:
        return openai_view(await self._client.batches.retrieve(job_id))

    async def results(self, job: JobView) -> list[LineOutcome]:
        batch: Batch = job.handle
        outcomes: list[LineOutcome] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await self._client.files.content(file_id)
                outcomes += parse_lines(content.content, batch_id=batch.id, status=batch.status)
        return outcomes

    async def cancel(self, job_id: str) -> bool:
        try:
            await self._client.batches.cancel(job_id)
        except (openai.ConflictError, openai.NotFoundError):  # ended, or never was here
            return False
        return True

    async def find(
        self,
        metadata: Mapping[str, str],
        *,
        requests: int = 0,
        created_after: float | None = None,
        known: frozenset[str] = frozenset(),
        scan: int = 1000,
    ) -> JobView | None:
        """The most recent job whose metadata holds every pair of ``metadata``.

        Looks at the ``scan`` newest jobs: a job created moments before a crash is
        among them.
        """
        seen = 0
        async for batch in self._client.batches.list(limit=100):
            tagged = batch.metadata and all(batch.metadata.get(k) == v for k, v in metadata.items())
            if tagged and batch.id not in known:
                return openai_view(batch)
            seen += 1
            if seen >= scan:
                break
        return None


def openai_view(batch: Batch) -> JobView:
    """An OpenAI (or Azure OpenAI) batch as the loop sees it."""
    errors: dict[int | None, tuple[str | None, str]] = {}
    data: Any = batch.errors.data if batch.errors is not None else None
    for entry in data or ():
        errors.setdefault(entry.line, (entry.code, entry.message or entry.code or "invalid"))
    final = batch.status in _FINAL
    return JobView(
        id=batch.id,
        status=batch.status,
        final=final,
        outcome=batch.status if final else None,
        input_file_id=batch.input_file_id,
        errors=errors,
        handle=batch,
    )
