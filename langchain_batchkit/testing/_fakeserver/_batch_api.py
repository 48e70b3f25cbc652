"""The Batch API's HTTP endpoints: ``/v1/files`` and ``/v1/batches``.

Request checking happens here (form fields, JSON parameters, query strings), as
400s like the real service's; what files and batches *are* lives in
:mod:`._files` and :mod:`._batches`.

Limits: a ``purpose="batch"`` upload must be named ``*.jsonl`` and hold at most
``batch_max_file_bytes``, else HTTP 400 at upload (as OpenAI refuses such files);
a file with more than ``batch_max_requests`` lines is accepted, and its batch
``failed`` with ``too_many_tasks``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from langchain_batchkit.testing._fakeserver._batches import BatchStore
from langchain_batchkit.testing._fakeserver._config import FakeServerConfig
from langchain_batchkit.testing._fakeserver._exchange import (
    InvalidRequest,
    Outcome,
    Request,
    Response,
    Route,
    json_response,
)
from langchain_batchkit.testing._fakeserver._files import FileStore, WallClock
from langchain_batchkit.testing._fakeserver._pages import cursor_page, query_limit
from langchain_batchkit.testing._fakeserver._stats import Counters

__all__ = ["BatchApiEndpoints"]

_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")


class BatchApiEndpoints:
    """Handlers for files and batches, over a thread-safe file store and batch store."""

    __slots__ = ("_batches", "_config", "_counters", "_files", "_wall")

    def __init__(self, config: FakeServerConfig, counters: Counters) -> None:
        self._config = config
        self._counters = counters
        self._wall = WallClock(config.clock)
        self._files = FileStore()
        self._batches = BatchStore(config, self._files, counters, self._wall)

    def routes(
        self, prefix: str = "/v1", endpoints: tuple[str, ...] = _ENDPOINTS
    ) -> tuple[Route, ...]:
        """The routes under ``prefix``, whose batches run on one of ``endpoints``.

        Azure OpenAI serves the same files and batches under ``/openai``, with its own
        endpoint names (see :mod:`._azure`).
        """
        files, batches = f"{prefix}/files", f"{prefix}/batches"
        file_path, batch_path = files + "/{file_id}", batches + "/{batch_id}"

        async def create_batch(request: Request, params: Mapping[str, str]) -> Outcome:
            return await self.create_batch(request, params, endpoints)

        return (
            Route("POST", files, self.upload_file),
            Route("GET", files, self.list_files),
            Route("GET", file_path, self.retrieve_file),
            Route("DELETE", file_path, self.delete_file),
            Route("GET", file_path + "/content", self.file_content),
            Route("POST", batches, create_batch),
            Route("GET", batches, self.list_batches),
            Route("GET", batch_path, self.retrieve_batch),
            Route("POST", batch_path + "/cancel", self.cancel_batch),
        )

    # ------------------------------------------------------------------ files

    async def upload_file(self, request: Request, params: Mapping[str, str]) -> Outcome:
        form = await request.form()
        purpose_part, file_part = form.get("purpose"), form.get("file")
        if purpose_part is None:
            raise InvalidRequest(
                "Missing required parameter: 'purpose'.",
                param="purpose",
                code="missing_required_parameter",
            )
        purpose = purpose_part.text
        if purpose not in _PURPOSES:
            raise InvalidRequest(
                f"Invalid purpose {purpose!r}: expected one of {', '.join(_PURPOSES)}.",
                param="purpose",
            )
        if file_part is None or file_part.filename is None:
            raise InvalidRequest(
                "Missing required parameter: 'file' (a file part with a filename).",
                param="file",
                code="missing_required_parameter",
            )
        if purpose == "batch":
            self._check_batch_file(file_part.filename, len(file_part.data))
        stored = self._files.add(
            filename=file_part.filename,
            purpose=purpose,
            data=file_part.data,
            created_at=self._wall.unix(self._wall.now()),
        )
        self._counters.record_file_upload()
        return json_response(200, stored.to_json())

    def _check_batch_file(self, filename: str, size: int) -> None:
        if not filename.endswith(".jsonl"):
            raise InvalidRequest(
                f"Invalid file format for Batch API: {filename!r} must be a .jsonl file.",
                param="file",
                code="invalid_file_format",
            )
        limit = self._config.batch_max_file_bytes
        if size > limit:
            raise InvalidRequest(
                f"The batch input file is {size} bytes; the Batch API accepts at most "
                f"{limit} bytes per file. Split it into several batches.",
                param="file",
                code="file_too_large",
            )

    async def list_files(self, request: Request, params: Mapping[str, str]) -> Outcome:
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest(f"'order' must be 'asc' or 'desc', got {order!r}.", param="order")
        files = self._files.listing(request.query.get("purpose"), newest_first=order == "desc")
        page = cursor_page(
            [(f.id, f.to_json()) for f in files],
            after=request.query.get("after"),
            limit=query_limit(request.query, default=10_000, maximum=10_000),
            kind="File",
        )
        return json_response(200, page)

    async def retrieve_file(self, request: Request, params: Mapping[str, str]) -> Outcome:
        return json_response(200, self._files.get(params["file_id"]).to_json())

    async def delete_file(self, request: Request, params: Mapping[str, str]) -> Outcome:
        file_id = params["file_id"]
        self._files.delete(file_id)
        return json_response(200, {"id": file_id, "object": "file", "deleted": True})

    async def file_content(self, request: Request, params: Mapping[str, str]) -> Outcome:
        stored = self._files.get(params["file_id"])
        return Response(200, stored.data, "application/octet-stream")

    # ------------------------------------------------------------------ batches

    async def create_batch(
        self, request: Request, params: Mapping[str, str], endpoints: tuple[str, ...] = _ENDPOINTS
    ) -> Outcome:
        try:
            payload = json.loads(await request.body())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidRequest("We could not parse the JSON body of your request.") from exc
        if not isinstance(payload, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        input_file_id = payload.get("input_file_id")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise InvalidRequest(
                "Missing required parameter: 'input_file_id'.",
                param="input_file_id",
                code="missing_required_parameter",
            )
        endpoint = payload.get("endpoint")
        if endpoint not in endpoints:
            raise InvalidRequest(
                f"Invalid endpoint {endpoint!r}: the fake server runs only "
                f"{' and '.join(map(repr, endpoints))} batches.",
                param="endpoint",
            )
        window = payload.get("completion_window")
        if window != "24h":
            raise InvalidRequest(
                f"Invalid completion_window {window!r}: only '24h' is supported.",
                param="completion_window",
            )
        batch = self._batches.create(
            input_file_id=input_file_id,
            endpoint=endpoint,
            metadata=_check_metadata(payload.get("metadata")),
        )
        return json_response(200, batch)

    async def list_batches(self, request: Request, params: Mapping[str, str]) -> Outcome:
        limit = query_limit(request.query, default=20, maximum=100)
        return json_response(200, self._batches.page(limit=limit, after=request.query.get("after")))

    async def retrieve_batch(self, request: Request, params: Mapping[str, str]) -> Outcome:
        return json_response(200, self._batches.retrieve(params["batch_id"]))

    async def cancel_batch(self, request: Request, params: Mapping[str, str]) -> Outcome:
        return json_response(200, self._batches.cancel(params["batch_id"]))


def _check_metadata(value: object) -> dict[str, str] | None:
    """OpenAI's metadata rules: at most 16 string pairs, keys <= 64, values <= 512 chars."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or len(value) > 16
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in value.items()
        )
    ):
        raise InvalidRequest(
            "Invalid 'metadata': expected at most 16 string pairs, keys up to 64 and values "
            "up to 512 characters.",
            param="metadata",
        )
    return dict(value)
