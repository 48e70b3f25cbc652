"""Validation of a Batch API input file, as the real service does before running it.

A file that fails makes its batch ``failed`` with ``errors.data``: one entry per
problem, with the 1-based line number, in file order. The codes are OpenAI's
(``invalid_json_line``, ``duplicate_custom_id``, ``url_mismatch``,
``model_mismatch``, ``empty_file``, ``too_many_tasks``) plus
``missing_required_parameter`` and ``invalid_method``/``invalid_type`` for the
fields it needs. A line's ``body`` is only checked to be an object here: what is
wrong inside it (no messages, a bad image, a rejected prompt) fails that one line
when the batch runs, as a 400 in the error file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["BatchError", "BatchInput", "BatchLine", "parse_batch_input"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One valid request line: where it was, its key and its request body."""

    line: int
    custom_id: str
    body: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class BatchError:
    """One entry of a failed batch's ``errors.data``."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(frozen=True, slots=True)
class BatchInput:
    """The outcome of validation: the lines to run, or the errors that fail the batch."""

    lines: tuple[BatchLine, ...]
    errors: tuple[BatchError, ...]
    model: str | None


def parse_batch_input(data: bytes, *, endpoint: str, max_requests: int) -> BatchInput:
    """Validate a JSONL input file for a batch on ``endpoint``.

    Blank lines are skipped (a trailing newline is normal). More than
    ``max_requests`` lines fails the batch with ``too_many_tasks`` alone, so a client
    learns to split its input before the lines are read.

    Example:
        >>> line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",'
        >>> parsed = parse_batch_input(line + b' "body": {"model": "m"}}\\n',
        ...                            endpoint="/v1/chat/completions", max_requests=10)
        >>> [line.custom_id for line in parsed.lines], parsed.errors
        (['a'], ())
    """
    numbered = [(i, raw) for i, raw in enumerate(data.split(b"\n"), start=1) if raw.strip()]
    if not numbered:
        return BatchInput((), (BatchError("empty_file", "The batch input file is empty."),), None)
    if len(numbered) > max_requests:
        message = (
            f"The batch input file has {len(numbered)} requests; a batch can hold at most "
            f"{max_requests}. Split it into several batches."
        )
        return BatchInput((), (BatchError("too_many_tasks", message),), None)
    lines: list[BatchLine] = []
    errors: list[BatchError] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in numbered:
        try:
            line = _parse_line(number, raw, endpoint)
        except _LineError as exc:
            errors.append(exc.error)
            continue
        if line.custom_id in seen:
            errors.append(
                BatchError(
                    "duplicate_custom_id",
                    f"The custom_id {line.custom_id!r} for this request is a duplicate of "
                    "another request. The custom_id parameter must be unique for each "
                    "request in a batch.",
                    number,
                    "custom_id",
                )
            )
            continue
        seen.add(line.custom_id)
        line_model = line.body.get("model")
        if isinstance(line_model, str):
            if model is None:
                model = line_model
            elif line_model != model:
                errors.append(
                    BatchError(
                        "model_mismatch",
                        f"The model {line_model!r} of this request does not match the model "
                        f"{model!r} of the batch's other requests; a batch runs one model.",
                        number,
                        "body.model",
                    )
                )
                continue
        lines.append(line)
    if errors:
        return BatchInput((), tuple(errors), None)
    return BatchInput(tuple(lines), (), model)


class _LineError(Exception):
    def __init__(self, error: BatchError) -> None:
        super().__init__(error.message)
        self.error = error


def _parse_line(number: int, raw: bytes, endpoint: str) -> BatchLine:
    try:
        request = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = "This line is not parseable as valid JSON."
        raise _LineError(BatchError("invalid_json_line", message, number)) from exc
    if not isinstance(request, dict):
        message = "This line is not a JSON object."
        raise _LineError(BatchError("invalid_json_line", message, number))
    custom_id = _required(request, "custom_id", str, number)
    method = _required(request, "method", str, number)
    if method.upper() != "POST":
        raise _LineError(
            BatchError(
                "invalid_method",
                f"The method {method!r} is not supported; batch requests use 'POST'.",
                number,
                "method",
            )
        )
    url = _required(request, "url", str, number)
    if url != endpoint:
        raise _LineError(
            BatchError(
                "url_mismatch",
                f"The URL {url!r} of this request does not match the batch endpoint {endpoint!r}.",
                number,
                "url",
            )
        )
    body = _required(request, "body", dict, number)
    return BatchLine(number, custom_id, body)


def _required(request: Mapping[str, object], name: str, kind: type[_T], number: int) -> _T:
    value = request.get(name)
    if value is None:
        message = f"Missing required parameter: '{name}'."
        raise _LineError(BatchError("missing_required_parameter", message, number, name))
    if not isinstance(value, kind) or value == "":
        expected = "a non-empty string" if kind is str else "an object"
        message = f"Invalid type for '{name}': expected {expected}."
        raise _LineError(BatchError("invalid_type", message, number, name))
    return value
