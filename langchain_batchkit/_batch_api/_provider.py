"""The OpenAI Files and Batches calls the runner makes, through the model's own client.

The client is a copy of the ChatOpenAI's ``root_async_client`` (same key, base
URL, organization, headers, timeout and retries), given a fresh HTTP connection
pool for the run: a run's event loop must not reuse connections opened on
another loop. An async run on the caller's loop uses the model's own
``http_async_client`` when it brought one (it belongs to that loop); a sync run,
whose job I/O runs on a private loop, never does. The key stays inside the
client; nothing here reads or logs it.
"""

from __future__ import annotations

from collections.abc import Mapping

import openai
from langchain_openai import ChatOpenAI
from openai.types import Batch

from langchain_batchkit._batch_api._requests import ENDPOINT

__all__ = ["OpenAIBatches"]


class OpenAIBatches:
    """Upload, create, retrieve, download, cancel and find jobs; an async context manager.

    Example:
        >>> async with OpenAIBatches.for_model(llm) as api:     # doctest: +SKIP
        ...     batch = await api.retrieve("batch_abc")          # doctest: +SKIP
    """

    __slots__ = ("_client", "_owned")

    def __init__(self, client: openai.AsyncOpenAI, *, owned: bool) -> None:
        self._client = client
        self._owned = owned

    @classmethod
    def for_model(cls, model: ChatOpenAI, *, private_loop: bool = False) -> OpenAIBatches:
        """The model's client settings with a connection pool fit for the current loop.

        Args:
            model: the ChatOpenAI whose key, base URL and client settings are used.
            private_loop: the calls run on a private loop (a sync run), so the model's
                own ``http_async_client``, bound to the caller's loop, is never used: a
                fresh default one is made (its proxy or TLS settings do not apply).
        """
        return cls.for_client(
            model.root_async_client, model.http_async_client, private_loop=private_loop
        )

    @classmethod
    def for_client(
        cls, root: openai.AsyncOpenAI, http_async_client: object, *, private_loop: bool = False
    ) -> OpenAIBatches:
        """:meth:`for_model` from a model's client and its own ``http_async_client``
        (``OpenAIEmbeddings`` keeps them as ``ChatOpenAI`` does, under other names)."""
        if http_async_client is not None and not private_loop:
            return cls(root, owned=False)
        return cls(root.copy(http_client=openai.DefaultAsyncHttpxClient()), owned=True)

    async def __aenter__(self) -> OpenAIBatches:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._owned:
            await self._client.close()

    async def upload(self, filename: str, data: bytes) -> str:
        uploaded = await self._client.files.create(file=(filename, data), purpose="batch")
        return uploaded.id

    async def create(
        self,
        input_file_id: str,
        *,
        window: str,
        metadata: Mapping[str, str],
        endpoint: str = ENDPOINT,
    ) -> Batch:
        return await self._client.batches.create(
            input_file_id=input_file_id,
            endpoint=endpoint,  # type: ignore[arg-type]
            completion_window=window,  # type: ignore[arg-type]
            metadata=dict(metadata),
        )

    async def retrieve(self, batch_id: str) -> Batch:
        return await self._client.batches.retrieve(batch_id)

    async def download(self, file_id: str) -> bytes:
        content = await self._client.files.content(file_id)
        return content.content

    async def cancel(self, batch_id: str) -> Batch:
        return await self._client.batches.cancel(batch_id)

    async def find(self, metadata: Mapping[str, str], *, scan: int = 1000) -> Batch | None:
        """The most recent job whose metadata holds every pair of ``metadata``.

        Looks at the ``scan`` newest jobs: a job created moments before a crash is
        among them.
        """
        seen = 0
        async for batch in self._client.batches.list(limit=100):
            if batch.metadata and all(batch.metadata.get(k) == v for k, v in metadata.items()):
                return batch
            seen += 1
            if seen >= scan:
                break
        return None
