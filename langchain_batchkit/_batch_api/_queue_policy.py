"""The enqueued-token queue's decisions, without I/O: admit a job or not, what a refusal teaches.

Providers cap the prompt tokens enqueued across all of an organisation's open
batch jobs for a model (OpenAI: "Enqueued token limit reached for gpt-4o-mini
in organization org-x. Limit: 90,000 enqueued tokens."); a job over the cap is
refused as a whole. The queue keeps the tokens of open jobs under a
:class:`Cap` and learns one from refusals; everything it decides is here, as
pure functions of counts:

* :func:`admit`: send a job now, let it wait for open jobs to end, split it
  (it alone is over the cap), or give up on a single request over a known cap.
* :func:`learn`: the cap after a refusal, the provider's own figure when its
  message gives one and explains the refusal, else a conservative guess below
  what was refused, so the same job is never sent again into the same queue.
* :func:`prompt_tokens`: what a request enqueues, counted offline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from langchain_batchkit._tokenize import IMAGE_TOKENS, PER_MESSAGE, REPLY_PRIMING, count_text

__all__ = [
    "REFUSAL_CODE",
    "Cap",
    "Decision",
    "Verdict",
    "admit",
    "is_refusal",
    "learn",
    "limit_in",
    "prompt_tokens",
    "tighter",
]

#: OpenAI's error code of a batch refused for the enqueued-token cap.
REFUSAL_CODE: Final = "token_limit_exceeded"
_REFUSAL_TEXT = re.compile(r"enqueued token limit", re.IGNORECASE)
_LIMIT = re.compile(r"Limit:\s*([\d,_]+)", re.IGNORECASE)

Decision = Literal["admit", "wait", "split", "too_large"]


@dataclass(frozen=True, slots=True)
class Cap:
    """A model's enqueued-token cap and where it comes from.

    Attributes:
        tokens: the most prompt tokens its open jobs may hold together.
        exact: the user's or the provider's own figure (a single request over it can
            never run); ``False`` for a guess inferred from a refusal.
        source: says where the figure comes from, for the logs.
    """

    tokens: int
    exact: bool
    source: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :func:`admit` decided for one job, and the counts it decided on.

    Attributes:
        decision: ``admit`` (send it), ``wait`` (open jobs hold too much), ``split``
            (the job alone is over the cap: plan smaller jobs), ``too_large`` (a single
            request over an exact cap: it can never be sent).
        tokens: the job's prompt tokens.
        enqueued: the prompt tokens of the model's other open jobs.
        cap: the cap it was held to (``None``: none known).
    """

    decision: Decision
    tokens: int
    enqueued: int
    cap: Cap | None

    @property
    def admitted(self) -> bool:
        return self.decision == "admit"

    def reason(self) -> str:
        """Why the job waits, splits or fails, in words."""
        if self.cap is None:
            return "no cap known"
        return (
            f"{self.enqueued:,} tokens enqueued by open jobs + {self.tokens:,} of this job "
            f"> cap {self.cap.tokens:,} ({self.cap.source})"
        )


def admit(*, tokens: int, requests: int, enqueued: int, cap: Cap | None) -> Verdict:
    """May a job of ``tokens`` prompt tokens (``requests`` lines) join ``enqueued`` tokens?

    A job alone over the cap is split when it has several requests. A single request
    over an exact cap can never run (``too_large``); over a guessed cap it is sent
    when nothing else is enqueued, since only the provider can tell.

    Example:
        >>> cap = Cap(90_000, exact=True, source="max_enqueued_tokens")
        >>> [admit(tokens=t, requests=10, enqueued=e, cap=cap).decision
        ...  for t, e in [(40_000, 50_000), (40_000, 60_000), (95_000, 0)]]
        ['admit', 'wait', 'split']
    """
    decision: Decision = "wait"
    if cap is None or enqueued + tokens <= cap.tokens:
        decision = "admit"
    elif tokens > cap.tokens:
        if requests > 1:
            decision = "split"
        elif cap.exact:
            decision = "too_large"
        elif enqueued == 0:
            decision = "admit"
    return Verdict(decision, tokens, enqueued, cap)


def learn(previous: Cap | None, *, message: str, ahead: int, tokens: int) -> Cap:
    """The cap after a job of ``tokens`` was refused with ``ahead`` tokens enqueued before it.

    The provider's ``Limit: N`` is taken as exact when our own count says the
    refused job was over it. Otherwise (no figure, or our count thought it fit:
    other users of the organisation, or a tokenizer that counts differently) the
    cap becomes a guess strictly below what was refused: what was enqueued, or
    half the job when that is more. A guess never raises an earlier, lower cap.

    Example:
        >>> message = "Enqueued token limit reached ... Limit: 90,000 enqueued tokens."
        >>> learn(None, message=message, ahead=80_000, tokens=20_000).tokens
        90000
        >>> learn(None, message="Enqueued token limit reached", ahead=80_000, tokens=20_000)
        Cap(tokens=80000, exact=False, source='inferred from a refusal')
    """
    limit = limit_in(message)
    if limit is not None and ahead + tokens > limit:
        return Cap(limit, exact=True, source="the provider's refusal")
    guess = max(1, ahead, tokens // 2)
    if limit is not None:
        guess = min(guess, limit)
    learned = Cap(guess, exact=False, source="inferred from a refusal")
    if previous is not None and previous.tokens <= learned.tokens:
        return previous
    return learned


def tighter(a: Cap | None, b: Cap | None) -> Cap | None:
    """The lower of two caps (either may be unknown)."""
    if a is None or b is None:
        return a or b
    return a if a.tokens <= b.tokens else b


def limit_in(message: str) -> int | None:
    """The ``Limit: N`` of a refusal message, if it gives one.

    Example:
        >>> limit_in("Enqueued token limit reached for gpt-4o-mini. Limit: 90,000 enqueued tokens.")
        90000
    """
    found = _LIMIT.search(message)
    if found is None:
        return None
    digits = re.sub(r"[,_]", "", found.group(1))
    return int(digits) if digits and int(digits) > 0 else None


def is_refusal(code: str | None, message: str) -> bool:
    """Was a job refused for the enqueued-token cap (rather than for its content)?

    Example:
        >>> is_refusal("token_limit_exceeded", "Enqueued token limit reached")
        True
        >>> is_refusal("invalid_json_line", "This line is not parseable as valid JSON.")
        False
    """
    return code == REFUSAL_CODE or bool(_REFUSAL_TEXT.search(message))


def prompt_tokens(body_json: str) -> tuple[str, int]:
    """The model and prompt tokens of one request body, counted offline.

    Chat bodies count as :func:`~langchain_batchkit._tokenize.count_messages` does
    (OpenAI's enqueued tokens are the prompt's); embeddings bodies their inputs;
    content blocks of other providers their text. Unreadable bodies count 0.

    Example:
        >>> body = '{"model": "local", "messages": [{"role": "user", "content": "12345678"}]}'
        >>> prompt_tokens(body)
        ('local', 9)
    """
    try:
        body = json.loads(body_json)
    except ValueError:
        return "", 0
    if not isinstance(body, Mapping):
        return "", 0
    model = body.get("model")
    name = model if isinstance(model, str) else ""
    if "messages" in body:
        messages = body.get("messages")
        total = REPLY_PRIMING + _content_tokens(body.get("system"), name)
        for message in messages if isinstance(messages, list) else ():
            total += PER_MESSAGE
            if isinstance(message, Mapping):
                total += _content_tokens(message.get("content"), name)
                total += _content_tokens(_arguments(message.get("tool_calls")), name)
        return name, total
    return name, _content_tokens(body.get("input"), name)


def _content_tokens(content: Any, model: str) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_text(content, model).tokens if content else 0
    if isinstance(content, list):
        return sum(_content_tokens(part, model) for part in content)
    if isinstance(content, Mapping):
        if content.get("type") in ("image_url", "image"):
            return IMAGE_TOKENS
        return _content_tokens(content.get("text"), model)
    return 0


def _arguments(calls: Any) -> list[str]:
    """The arguments an assistant message's tool calls carry (they are prompt too)."""
    texts: list[str] = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, Mapping) else None
        arguments = function.get("arguments") if isinstance(function, Mapping) else None
        if isinstance(arguments, str):
            texts.append(arguments)
    return texts
