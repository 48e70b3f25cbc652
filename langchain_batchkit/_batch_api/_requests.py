"""Request lines for a Batch API job, built from the model's own request payload.

langchain-openai already turns messages, images, tools and model parameters into
a Chat Completions request body (``BaseChatOpenAI._get_request_payload``); a batch
line is that body, minus what only an HTTP call has (streaming, SDK-only options),
with a ``custom_id``. Splitting lines into jobs within the provider's limits is a
pure function of their sizes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = ["ENDPOINT", "PreparedRequest", "RequestBuilder", "plan_jobs", "plan_lazily"]

#: The endpoint of a chat model's batches (embeddings go to ``/v1/embeddings``).
ENDPOINT: Final = "/v1/chat/completions"

#: Options the SDK takes besides the body (or that only make sense online).
_NOT_IN_BODY = ("stream", "stream_options", "extra_headers", "extra_query", "timeout")


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One item's request body, serialized once, and its digest.

    Attributes:
        body_json: the JSON body (keys sorted, so the same request always reads the same).
        digest: sha256 of ``body_json``: identifies the request in the state file, so
            a resumed run notices inputs that changed.
    """

    body_json: str
    digest: str


class RequestBuilder:
    """Builds request bodies for one model (and its bound kwargs), item by item.

    Example:
        >>> builder = RequestBuilder(llm, {"temperature": 0})  # doctest: +SKIP
        >>> builder.build("Hello").body_json                                # doctest: +SKIP
        '{"messages":[{"content":"Hello","role":"user"}],"model":"gpt-4o-mini",...}'
    """

    __slots__ = ("_body_model", "_kwargs", "_model", "response_format", "tools")

    def __init__(
        self, model: Any, kwargs: Mapping[str, Any], *, body_model: str | None = None
    ) -> None:
        kwargs = dict(kwargs)
        kwargs.pop("ls_structured_output_format", None)  # tracing only, never sent
        self._model = model
        self._kwargs = kwargs
        #: The body's ``model`` when it is not the model's own name: an Azure OpenAI
        #: batch line names the deployment that serves it there.
        self._body_model = body_model
        #: The ``response_format`` as bound (a pydantic class for structured output),
        #: needed again to parse answers as the SDK's ``parse`` would.
        defaults = model.model_kwargs
        self.response_format: object = kwargs.get(
            "response_format", defaults.get("response_format")
        )
        self.tools: object = kwargs.get("tools", defaults.get("tools"))

    def build(self, model_input: Any) -> PreparedRequest:
        """The request body the model would send for ``model_input``, ready for a line."""
        payload: dict[str, Any] = self._model._get_request_payload(model_input, **self._kwargs)
        for key in _NOT_IN_BODY:
            payload.pop(key, None)
        extra = payload.pop("extra_body", None)
        if isinstance(extra, Mapping):
            payload.update(extra)  # the SDK merges extra_body into the JSON body too
        if self._body_model is not None:
            payload["model"] = self._body_model
        if isinstance(payload.get("response_format"), type):
            payload["response_format"] = _response_format_param(payload["response_format"])
        if "messages" not in payload:
            raise ValueError(
                "this request would go to the Responses API; the Batch API runner sends "
                "Chat Completions requests only"
            )
        body_json = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return PreparedRequest(body_json, hashlib.sha256(body_json.encode()).hexdigest())


def _response_format_param(schema: type) -> Any:
    """A pydantic class as the JSON ``response_format`` the SDK's ``parse`` sends."""
    from openai.lib._parsing._completions import type_to_response_format_param

    return type_to_response_format_param(schema)


def plan_jobs(
    sizes: Sequence[tuple[str, int]],
    *,
    max_requests: int,
    max_bytes: int,
    tokens: Mapping[str, int] | None = None,
    max_tokens: int | None = None,
) -> tuple[list[list[str]], list[str]]:
    """Group lines into jobs that respect the per-job limits, in order.

    Args:
        sizes: ``(custom_id, bytes)`` per line, newline included.
        max_requests: most lines per job.
        max_bytes: largest input file per job.
        tokens: each line's prompt tokens, by custom_id (with ``max_tokens``).
        max_tokens: most prompt tokens per job (the enqueued-token cap); a line over
            it alone makes a job of its own (the queue decides what becomes of it).

    Returns:
        The jobs (lists of custom_ids), and the custom_ids of lines too large for any job.

    Example:
        >>> plan_jobs([("a", 40), ("b", 40), ("c", 40), ("d", 500)], max_requests=10, max_bytes=100)
        ([['a', 'b'], ['c']], ['d'])
        >>> plan_jobs([("a", 1), ("b", 1), ("c", 1)], max_requests=10, max_bytes=100,
        ...           tokens={"a": 60, "b": 60, "c": 30}, max_tokens=100)
        ([['a'], ['b', 'c']], [])
    """
    jobs: list[list[str]] = []
    too_large: list[str] = []
    lines = ((cid, size, tokens.get(cid, 0) if tokens else 0) for cid, size in sizes)
    for kind, custom_ids in plan_lazily(
        lines, max_requests=max_requests, max_bytes=max_bytes, max_tokens=max_tokens
    ):
        if kind == "job":
            jobs.append(custom_ids)
        else:
            too_large += custom_ids
    return jobs, too_large


def plan_lazily(
    lines: Iterable[tuple[str, int, int]],
    *,
    max_requests: int,
    max_bytes: int,
    max_tokens: int | None = None,
) -> Iterator[tuple[Literal["job", "too_large"], list[str]]]:
    """:func:`plan_jobs` one step at a time, over ``(custom_id, bytes, tokens)`` lines.

    Yields ``("job", custom_ids)`` as soon as a job is full, and ``("too_large",
    [custom_id])`` for a line no job can hold. Lines are read only as the plan
    reaches them, so a caller that stops at the first job that must wait for the
    enqueued-token queue measures a job's worth of lines, not every pending one.

    Example:
        >>> steps = plan_lazily(iter([("a", 40, 0), ("b", 40, 0), ("c", 40, 0)]),
        ...                     max_requests=10, max_bytes=100)
        >>> next(steps)
        ('job', ['a', 'b'])
    """
    current: list[str] = []
    used = used_tokens = 0
    for custom_id, size, tokens in lines:
        if size > max_bytes:
            yield "too_large", [custom_id]
            continue
        over = max_tokens is not None and used_tokens + tokens > max_tokens
        if current and (len(current) >= max_requests or used + size > max_bytes or over):
            yield "job", current
            current, used, used_tokens = [], 0, 0
        current.append(custom_id)
        used += size
        used_tokens += tokens
    if current:
        yield "job", current
