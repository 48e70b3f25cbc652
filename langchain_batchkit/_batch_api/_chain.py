"""Split a chain around its one ChatOpenAI step: local steps before, the model, local after.

The Batch API replaces only the model call. ``prompt | model | parser`` becomes
``prompt`` run locally (its outputs become request bodies), the model's requests
sent as a job, and ``parser`` run locally on the returned messages. Anything the
runner cannot split that way is refused at construction with a clear message,
before anything is uploaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from langchain_core.language_models import BaseLanguageModel
from langchain_core.runnables import Runnable, RunnableBinding, RunnableSequence
from langchain_openai import AzureChatOpenAI, ChatOpenAI

from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._introspect import iter_runnables

__all__ = ["ChainParts", "split_chain"]

_SHAPE = (
    "BatchAPIRunner takes a ChatOpenAI (possibly .bind(...) / .bind_tools(...)), or a "
    "RunnableSequence with exactly one such step, e.g. prompt | model | parser"
)


@dataclass(frozen=True, slots=True)
class ChainParts:
    """A chain split around its model step.

    Attributes:
        pre: the steps before the model, run locally (``None``: the input goes
            straight to the model).
        model: the ChatOpenAI whose requests go through the Batch API.
        kwargs: call parameters bound on the model (``bind``/``bind_tools``), outer
            bindings overriding inner ones, as LangChain merges them.
        post: the steps after the model, run locally on its messages (``None``: the
            AIMessage is the output).
    """

    pre: Runnable[Any, Any] | None
    model: ChatOpenAI
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    post: Runnable[Any, Any] | None = None


def split_chain(chain: object) -> ChainParts:
    """Find the one ChatOpenAI step of ``chain`` and the local steps around it.

    Raises:
        ConfigurationError: the chain has no such step, several, a model other than
            ChatOpenAI, a model hidden inside another step, or a model that would
            call the Responses API.

    Example:
        >>> parts = split_chain(prompt | llm.bind(temperature=0) | parser)  # doctest: +SKIP
        >>> parts.kwargs                                                     # doctest: +SKIP
        {'temperature': 0}
    """
    if not isinstance(chain, Runnable):
        raise ConfigurationError(f"{_SHAPE}; got {type(chain).__name__}")
    steps = list(_flatten(chain))
    found = [(i, _unwrap(step)) for i, step in enumerate(steps)]
    models = [(i, unwrapped) for i, unwrapped in found if unwrapped is not None]
    if not models:
        hidden = _hidden_model(chain)
        where = f" ({hidden} sits inside another step)" if hidden else ""
        raise ConfigurationError(f"{_SHAPE}; no model step found in {chain.get_name()}{where}")
    if len(models) > 1:
        names = ", ".join(steps[i].get_name() for i, _ in models)
        raise ConfigurationError(f"{_SHAPE}; found {len(models)} model steps ({names})")
    [(position, (model, kwargs))] = models
    pre = _sequence(steps[:position])
    post = _sequence(steps[position + 1 :])
    for part in (pre, post):
        hidden = _hidden_model(part)
        if hidden is not None:
            raise ConfigurationError(
                f"{_SHAPE}; {hidden} sits inside another step, where it would be called "
                "online for every item"
            )
    if model._use_responses_api({**kwargs, **model.model_kwargs}):
        raise ConfigurationError(
            f"{model.get_name()} would call the Responses API; BatchAPIRunner sends Chat "
            "Completions batches: use ChatOpenAI(use_responses_api=False)"
        )
    return ChainParts(pre, model, MappingProxyType(kwargs), post)


def _flatten(runnable: Runnable[Any, Any]) -> Iterator[Runnable[Any, Any]]:
    if isinstance(runnable, RunnableSequence):
        for step in runnable.steps:
            yield from _flatten(step)
    else:
        yield runnable


def _unwrap(step: Runnable[Any, Any]) -> tuple[ChatOpenAI, dict[str, Any]] | None:
    """The ChatOpenAI a step is (through bindings) and the merged bound kwargs."""
    layers: list[Mapping[str, Any]] = []
    inner: object = step
    while isinstance(inner, RunnableBinding):
        layers.append(inner.kwargs)
        inner = inner.bound
    if not isinstance(inner, BaseLanguageModel):
        return None
    if isinstance(inner, AzureChatOpenAI) or not isinstance(inner, ChatOpenAI):
        raise ConfigurationError(
            f"{_SHAPE}; {inner.get_name()} is not supported (only OpenAI's ChatOpenAI)"
        )
    kwargs: dict[str, Any] = {}
    for layer in reversed(layers):  # innermost first: outer bindings win
        kwargs.update(layer)
    return inner, kwargs


def _sequence(steps: list[Runnable[Any, Any]]) -> Runnable[Any, Any] | None:
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else RunnableSequence(*steps)


def _hidden_model(part: Runnable[Any, Any] | None) -> str | None:
    if part is None:
        return None
    for runnable in iter_runnables(part):
        if isinstance(runnable, BaseLanguageModel):
            return runnable.get_name()
    return None
