"""Split a chain around its one model step: the steps before, the model, the steps after.

Two features need the model's own answer rather than the chain's output: the Batch
API runner (it sends the model's requests as a job and runs the rest locally) and
the re-ask (it sends the model's rejected answer back with the parser's error). Both
split ``prompt | model | parser`` the same way, here; each then says which models
and shapes it can work with.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseLanguageModel
from langchain_core.runnables import Runnable, RunnableBinding, RunnableSequence

from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._introspect import iter_runnables

__all__ = ["ModelSplit", "as_sequence", "split_at_model", "split_at_models"]


@dataclass(frozen=True, slots=True)
class ModelSplit:
    """A chain cut at its model step.

    Attributes:
        before: the steps before the model, in order.
        step: the model step as written (its ``bind``/``bind_tools`` bindings included).
        model: the language model inside ``step``.
        kwargs: the call parameters bound on the model, outer bindings overriding
            inner ones, as LangChain merges them.
        after: the steps after the model, in order (parsers first).
    """

    before: tuple[Runnable[Any, Any], ...]
    step: Runnable[Any, Any]
    model: BaseLanguageModel[Any]
    kwargs: Mapping[str, Any]
    after: tuple[Runnable[Any, Any], ...]


def split_at_model(chain: object, shape: str) -> ModelSplit:
    """Find the one model step of ``chain`` (through sequences and bindings).

    Args:
        chain: the chain.
        shape: what the caller accepts, said first in every error message.

    Raises:
        ConfigurationError: ``chain`` is not a Runnable, has no model step, several,
            or a model hidden inside another step (a parallel, a function), where
            it cannot be reached.

    Example:
        >>> split = split_at_model(prompt | llm.bind(temperature=0) | parser, "")  # doctest: +SKIP
        >>> split.kwargs, split.after                                             # doctest: +SKIP
        ({'temperature': 0}, (parser,))
    """
    splits = split_at_models(chain, shape)
    if len(splits) > 1:
        names = ", ".join(split.step.get_name() for split in splits)
        raise ConfigurationError(f"{shape}; found {len(splits)} model steps ({names})")
    return splits[0]


def split_at_models(chain: object, shape: str, *, hint: str = "") -> list[ModelSplit]:
    """Cut ``chain`` at each of its top-level model steps, in order.

    The first split's ``before`` holds the steps before the first model (later
    splits' are empty); each split's ``after`` the steps up to the next model (or
    the end), so
    ``prompt | llm | parser | prompt2 | llm2`` gives two splits.

    Args:
        chain: the chain.
        shape: what the caller accepts, said first in every error message.
        hint: what to do instead, added to the message about a hidden model.

    Raises:
        ConfigurationError: ``chain`` is not a Runnable, has no model step, or a
            model hidden inside another step (a parallel, a function), where it
            cannot be reached.
    """
    if not isinstance(chain, Runnable):
        raise ConfigurationError(f"{shape}; got {type(chain).__name__}")
    steps = list(_flatten(chain))
    models = [(i, unwrapped) for i, step in enumerate(steps) if (unwrapped := _unwrap(step))]
    if not models:
        hidden = hidden_model(chain)
        where = f" ({hidden} sits inside another step)" if hidden else ""
        if hint:
            where += f"; a model called inside a function cannot be reached either{hint}"
        raise ConfigurationError(f"{shape}; no model step found in {chain.get_name()}{where}")
    for part in (s for i, s in enumerate(steps) if i not in {p for p, _ in models}):
        hidden = hidden_model(part)
        if hidden is not None:
            raise ConfigurationError(
                f"{shape}; {hidden} sits inside another step ({part.get_name()}), where it "
                f"cannot be reached{hint}"
            )
    bounds = [p for p, _ in models] + [len(steps)]
    splits = []
    for n, (position, (model, kwargs)) in enumerate(models):
        before = tuple(steps[:position]) if n == 0 else ()
        after = tuple(steps[position + 1 : bounds[n + 1]])
        splits.append(ModelSplit(before, steps[position], model, kwargs, after))
    return splits


def as_sequence(steps: tuple[Runnable[Any, Any], ...]) -> Runnable[Any, Any] | None:
    """``steps`` as one Runnable (``None`` for no steps)."""
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else RunnableSequence(*steps)


def hidden_model(part: Runnable[Any, Any] | None) -> str | None:
    """The name of a language model anywhere inside ``part``, if there is one."""
    if part is None:
        return None
    for runnable in iter_runnables(part):
        if isinstance(runnable, BaseLanguageModel):
            return runnable.get_name()
    return None


def _flatten(runnable: Runnable[Any, Any]) -> Iterator[Runnable[Any, Any]]:
    if isinstance(runnable, RunnableSequence):
        for step in runnable.steps:
            yield from _flatten(step)
    else:
        yield runnable


def _unwrap(step: Runnable[Any, Any]) -> tuple[BaseLanguageModel[Any], dict[str, Any]] | None:
    """The language model a step is (through bindings) and the merged bound kwargs."""
    layers: list[Mapping[str, Any]] = []
    inner: object = step
    while isinstance(inner, RunnableBinding):
        layers.append(inner.kwargs)
        inner = inner.bound
    if not isinstance(inner, BaseLanguageModel):
        return None
    kwargs: dict[str, Any] = {}
    for layer in reversed(layers):  # innermost first: outer bindings win
        kwargs.update(layer)
    return inner, kwargs
