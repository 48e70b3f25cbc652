"""The JSON schema of a kit's output: an ItemResult around the chain's own output."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, create_model

__all__ = ["item_result_schema"]


class ItemErrorSchema(BaseModel):
    """What went wrong for one item (the live exception is not part of the schema)."""

    type: str
    message: str
    traceback: str = ""
    module: str = ""


class TokenUsageSchema(BaseModel):
    """Token counts of one item."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class AttemptSchema(BaseModel):
    """One earlier attempt of an item (see :class:`Attempt`)."""

    error: ItemErrorSchema | None
    output: Any = None
    usage: TokenUsageSchema | None = None
    cost: float | None = None
    latency: float = 0.0


def item_result_schema(name: str, input_type: Any, output_type: Any) -> type[BaseModel]:
    """A pydantic model describing ``ItemResult[input_type, output_type]``.

    Falls back to ``Any`` for a type pydantic cannot describe.
    """
    candidates: list[tuple[Any, Any]] = [(input_type, output_type), (Any, output_type), (Any, Any)]
    for inp, out in candidates:
        optional_out: Any = Any if out is Any else out | None
        try:
            model = create_model(  # type: ignore[call-overload]
                name,
                index=(int, ...),
                input=(inp, ...),
                output=(optional_out, None),
                error=(ItemErrorSchema | None, None),
                attempts=(int, 1),
                latency=(float, 0.0),
                usage=(TokenUsageSchema | None, None),
                history=(list[AttemptSchema], []),
                key=(str | None, None),
                cost=(float | None, None),
            )
            model.model_json_schema()
        except Exception:
            continue
        return model  # type: ignore[no-any-return]
    raise AssertionError("unreachable: the Any schema always builds")  # pragma: no cover
