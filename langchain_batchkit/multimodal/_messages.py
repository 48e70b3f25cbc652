"""OpenAI-style image content parts and the one-turn message that asks about an image."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit.multimodal._sources import (
    DEFAULT_MAX_BYTES,
    Detail,
    ImageLimits,
    ImageSource,
    describe_source,
    encode_source,
    is_cheap_to_encode,
)

__all__ = ["DEFAULT_PROMPT", "MessageBuilder", "Prompt", "image_message", "image_part"]

#: The question asked when the caller gives none.
DEFAULT_PROMPT = "Caption this image."

Prompt = str | Callable[[str], str]
"""A fixed text, or a function of the source's description (its path or URL) returning it."""

_DETAILS = ("low", "high", "auto")


def _check_detail(detail: object) -> Detail | None:
    if detail is not None and detail not in _DETAILS:
        raise ConfigurationError(f"detail must be None, 'low', 'high' or 'auto', got {detail!r}")
    return detail  # type: ignore[return-value]


def _check_prompt(prompt: object) -> Prompt:
    if not (isinstance(prompt, str) or callable(prompt)):
        raise ConfigurationError(
            f"prompt must be a str or a function of the source's description, got {prompt!r}"
        )
    return prompt  # type: ignore[return-value]


def _part(url: str, detail: Detail | None) -> dict[str, Any]:
    image_url: dict[str, str] = {"url": url}
    if detail is not None:
        image_url["detail"] = detail
    return {"type": "image_url", "image_url": image_url}


def image_part(
    source: ImageSource,
    *,
    detail: Detail | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_side: int | None = None,
) -> dict[str, Any]:
    """An OpenAI-style ``image_url`` content part for ``source``.

    It is the format every chat model that takes OpenAI-style images understands
    (``ChatOpenAI``, and LangChain converts it for the others). Reads the file now;
    raises :class:`ImageSourceError` if the source cannot be sent.

    Args:
        source: an http(s) URL (sent as is), a data URL, a local path, bytes or a PIL image.
        detail: ``"low"``, ``"high"`` or ``"auto"``; omitted from the part when ``None``.
        max_bytes: the largest image sent.
        max_side: downscale images whose longer side is larger (needs Pillow).

    Returns:
        ``{"type": "image_url", "image_url": {"url": ..., "detail": ...}}``.

    Example:
        >>> image_part("https://example.com/cat.png", detail="low")
        {'type': 'image_url', 'image_url': {'url': 'https://example.com/cat.png', 'detail': 'low'}}
    """
    return _part(encode_source(source, ImageLimits(max_bytes, max_side)), _check_detail(detail))


def image_message(
    source: ImageSource,
    prompt: Prompt = DEFAULT_PROMPT,
    *,
    detail: Detail | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_side: int | None = None,
) -> list[BaseMessage]:
    """The messages that ask a chat model ``prompt`` about one image.

    A list, so it is a ready chat-model input: ``llm.invoke(image_message(...))``.

    Args:
        source: an http(s) URL, a data URL, a local path, bytes or a PIL image.
        prompt: the text sent with the image, or a function of the source's
            description (its path or URL) returning it.
        detail: ``"low"``, ``"high"`` or ``"auto"``, passed through to the image part.
        max_bytes: the largest image sent.
        max_side: downscale images whose longer side is larger (needs Pillow).

    Returns:
        ``[HumanMessage]`` whose content is a text part then an image part.

    Example:
        >>> llm.invoke(image_message("photos/cat.jpg", "Caption this image."))  # doctest: +SKIP
    """
    builder = MessageBuilder(prompt, detail=detail, limits=ImageLimits(max_bytes, max_side))
    return builder(source)


class MessageBuilder:
    """Builds one image's messages; the first step of every caption chain.

    Construction validates the options, so a bad ``detail`` fails before any item.
    The async path runs a large read, and any Pillow work, in a worker thread, so a
    big file never stalls the event loop the other items share.
    """

    __slots__ = ("detail", "limits", "prompt")

    def __init__(
        self, prompt: Prompt, *, detail: Detail | None = None, limits: ImageLimits | None = None
    ) -> None:
        self.prompt = _check_prompt(prompt)
        self.detail = _check_detail(detail)
        self.limits = limits if limits is not None else ImageLimits()

    def __call__(self, source: ImageSource) -> list[BaseMessage]:
        url = encode_source(source, self.limits)
        text = self.prompt if isinstance(self.prompt, str) else self.prompt(describe_source(source))
        content: list[str | dict[str, Any]] = [
            {"type": "text", "text": text},
            _part(url, self.detail),
        ]
        return [HumanMessage(content=content)]

    async def abuild(self, source: ImageSource) -> list[BaseMessage]:
        """Async twin of calling the builder: the same work, off the event loop if it is slow.

        A file, bytes or data URL over 64 KB, and any Pillow work, run in a worker
        thread; a small image is encoded in place, since the thread hop would cost
        more than the read (about 0.4 ms per item against a tenth of that).
        """
        if is_cheap_to_encode(source, self.limits):
            return self(source)
        return await asyncio.to_thread(self, source)
