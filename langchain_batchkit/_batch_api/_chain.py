"""Cut a chain into local steps and model steps: each model step is one Batch API round.

The Batch API replaces only the model calls. ``prompt | model | parser`` becomes
``prompt`` run locally (its outputs become request bodies), the model's requests
sent as jobs, and ``parser`` run locally on the returned messages. A chain with
several model steps (``prompt | llm | parser | prompt2 | llm2 | parser2``) runs
in rounds, one per model step, each over the items still alive. Anything that
cannot be cut that way (a model inside a parallel or a function) is refused at
construction, before anything is uploaded. The cut itself is
:func:`langchain_batchkit._split.split_at_models`, shared with the re-ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import Runnable

from langchain_batchkit._batch_api._backends import ModelBackend, backend_for
from langchain_batchkit._split import as_sequence, split_at_models

__all__ = ["ChainPlan", "ModelStep", "split_chain"]

_SHAPE = (
    "BatchAPIRunner takes a chat model (ChatOpenAI, AzureChatOpenAI, ChatAnthropic; "
    "possibly .bind(...) / .bind_tools(...) / .with_structured_output(...)), or a "
    "RunnableSequence of local steps and such models, e.g. prompt | model | parser"
)
_HINT = (
    ": the Batch API can only send model steps of the sequence itself; run this chain "
    "with batchkit(chain, flex=True) for cheaper online calls instead"
)


@dataclass(frozen=True, slots=True)
class ModelStep:
    """One model step: its requests go through a provider's Batch API.

    Attributes:
        backend: how its requests are built, sent and read back.
        post: the local steps after it, up to the next model step (``None``: the
            message goes on as it is).
    """

    backend: ModelBackend
    post: Runnable[Any, Any] | None = None


@dataclass(frozen=True, slots=True)
class ChainPlan:
    """A chain cut into rounds.

    Attributes:
        pre: the steps before the first model, run locally (``None``: the input goes
            straight to the model).
        steps: the model steps, in order (one round each).
    """

    pre: Runnable[Any, Any] | None
    steps: tuple[ModelStep, ...]

    @property
    def backend(self) -> ModelBackend:
        """The first model step's backend."""
        return self.steps[0].backend


def split_chain(chain: object) -> ChainPlan:
    """Find the model steps of ``chain`` and the local steps around them.

    Raises:
        ConfigurationError: the chain has no model step, a model with no Batch API
            here, a model hidden inside another step, or a model that would call
            the Responses API.

    Example:
        >>> plan = split_chain(prompt | llm.bind(temperature=0) | parser)  # doctest: +SKIP
        >>> len(plan.steps), plan.steps[0].post                           # doctest: +SKIP
        (1, parser)
    """
    splits = split_at_models(chain, _SHAPE, hint=_HINT)
    steps = tuple(
        ModelStep(backend_for(split.model, split.kwargs, _SHAPE), as_sequence(split.after))
        for split in splits
    )
    return ChainPlan(as_sequence(splits[0].before), steps)
