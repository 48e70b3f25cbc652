"""Split a chain around its one ChatOpenAI step: local steps before, the model, local after.

The Batch API replaces only the model call. ``prompt | model | parser`` becomes
``prompt`` run locally (its outputs become request bodies), the model's requests
sent as a job, and ``parser`` run locally on the returned messages. Anything the
runner cannot split that way is refused at construction with a clear message,
before anything is uploaded. The cut itself is
:func:`langchain_batchkit._split.split_at_model`, shared with the re-ask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from langchain_core.runnables import Runnable
from langchain_openai import AzureChatOpenAI, ChatOpenAI

from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._split import as_sequence, split_at_model

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
    split = split_at_model(chain, _SHAPE)
    model, kwargs = split.model, dict(split.kwargs)
    if isinstance(model, AzureChatOpenAI) or not isinstance(model, ChatOpenAI):
        raise ConfigurationError(
            f"{_SHAPE}; {model.get_name()} is not supported (only OpenAI's ChatOpenAI)"
        )
    if model._use_responses_api({**kwargs, **model.model_kwargs}):
        raise ConfigurationError(
            f"{model.get_name()} would call the Responses API; BatchAPIRunner sends Chat "
            "Completions batches: use ChatOpenAI(use_responses_api=False)"
        )
    pre, post = as_sequence(split.before), as_sequence(split.after)
    return ChainParts(pre, model, MappingProxyType(kwargs), post)
