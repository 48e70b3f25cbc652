"""What an Azure OpenAI answer adds to OpenAI's: the deployed model, content filter results.

Azure addresses a model by a *deployment* (a name the user chose); its answers name
the model behind it and carry the verdicts of its content filters, for the prompt
(``prompt_filter_results``) and for each choice (``content_filter_results``). The
fake resource deploys every model of ``FakeServerConfig.models`` under any name that
starts with it (``gpt-4o-mini``, ``gpt-4o-mini-batch``); any other deployment name
is a model of its own, answered under that name (as an answer that names no known
model, to be priced with ``prices=``). Its filters find everything safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

__all__ = ["AZURE_CHAT", "as_deployed", "deployed_model", "with_filter_results"]

#: The URL of an Azure batch line and the endpoint of an Azure chat batch.
AZURE_CHAT: Final = "/chat/completions"

_CATEGORIES = ("hate", "self_harm", "sexual", "violence")


def deployed_model(deployment: str, models: Sequence[str]) -> str:
    """The model a deployment serves: the longest of ``models`` its name starts with.

    Example:
        >>> deployed_model("gpt-4o-mini-batch", ("gpt-4o", "gpt-4o-mini"))
        'gpt-4o-mini'
        >>> deployed_model("summarizer", ("gpt-4o",))
        'summarizer'
    """
    served = [m for m in models if deployment == m or deployment.startswith(m + "-")]
    return max(served, key=len) if served else deployment


def as_deployed(body: Mapping[str, object], models: Sequence[str]) -> Mapping[str, object]:
    """A request body naming its deployment as ``model``, with the deployed model there
    instead (what answers and token counts go by); other bodies as they are."""
    deployment = body.get("model")
    if not isinstance(deployment, str) or not deployment:
        return body
    return {**body, "model": deployed_model(deployment, models)}


def with_filter_results(completion: Mapping[str, object]) -> dict[str, object]:
    """A ``chat.completion`` object as Azure sends it: every filter verdict "safe"."""
    verdicts = {name: {"filtered": False, "severity": "safe"} for name in _CATEGORIES}
    choices = completion.get("choices")
    return {
        **completion,
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": verdicts}],
        "choices": [
            {**choice, "content_filter_results": verdicts}
            for choice in (choices if isinstance(choices, list) else [])
            if isinstance(choice, Mapping)
        ],
    }
