"""The caption chain, and captioning many images with batchkit."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from langchain_batchkit._concurrency import MaxConcurrency
from langchain_batchkit._limits import RateLimit
from langchain_batchkit._options import DEFAULT_RETRY
from langchain_batchkit._progress import ProgressCallback
from langchain_batchkit._results import BatchResult
from langchain_batchkit._retry import RetryPolicy
from langchain_batchkit._runner import BatchKit, batchkit
from langchain_batchkit.multimodal._expand import expand_images
from langchain_batchkit.multimodal._messages import DEFAULT_PROMPT, MessageBuilder, Prompt
from langchain_batchkit.multimodal._sources import (
    DEFAULT_MAX_BYTES,
    Detail,
    ImageLimits,
    ImageSource,
)

__all__ = ["ChatModel", "acaption_images", "caption_images", "image_caption_chain"]

ChatModel = Runnable[list[BaseMessage], Any]
"""A chat model taking OpenAI-style image parts (``ChatOpenAI``, or any Runnable like it)."""

# The chain's declared input type: a source may be bytes or a PIL image, which no JSON
# schema describes, so the schema says "anything" rather than failing to build.
_ANY_SOURCE: Any = Any


def image_caption_chain(
    llm: ChatModel,
    prompt: Prompt = DEFAULT_PROMPT,
    *,
    detail: Detail | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_side: int | None = None,
) -> Runnable[ImageSource, str]:
    """``image source -> caption``: build the message, ask ``llm``, parse the text.

    The first step reads and encodes the image, so inside a batch each file is read
    only when its item starts (memory stays bounded by the items in flight) and a
    broken source fails only its own item, with an :class:`ImageSourceError`. Under
    ``ainvoke`` a large file (over 64 KB) or any Pillow work is done in a worker
    thread, off the event loop.

    Args:
        llm: a chat model that takes OpenAI-style image parts, e.g.
            ``ChatOpenAI(model="gpt-4o-mini", max_retries=0)``.
        prompt: the text sent with each image, or a function of the source's
            description (its path or URL) returning it.
        detail: ``"low"``, ``"high"`` or ``"auto"``, passed through to each image part.
        max_bytes: the largest image sent; a larger one fails its item.
        max_side: downscale images whose longer side is larger, before the size
            check (needs ``pip install 'langchain-batchkit[images]'``).

    Returns:
        ``RunnableLambda(build message) | llm | StrOutputParser()``.

    Example:
        >>> chain = image_caption_chain(ChatOpenAI(model="gpt-4o-mini"))  # doctest: +SKIP
        >>> chain.invoke("photos/cat.jpg")                                 # doctest: +SKIP
        'A tabby cat asleep on a windowsill.'
    """
    builder = MessageBuilder(prompt, detail=detail, limits=ImageLimits(max_bytes, max_side))
    build: Runnable[ImageSource, list[BaseMessage]] = RunnableLambda(
        builder, afunc=builder.abuild, name="image_message"
    ).with_types(input_type=_ANY_SOURCE)
    return build | llm | StrOutputParser()


def _caption_kit(
    sources: ImageSource | Iterable[ImageSource],
    llm: ChatModel,
    prompt: Prompt,
    detail: Detail | None,
    max_bytes: int,
    max_side: int | None,
    max_concurrency: MaxConcurrency,
    retry: RetryPolicy | None,
    rate_limit: RateLimit | None,
    progress: bool | None,
    on_progress: ProgressCallback | None,
    desc: str | None,
) -> tuple[BatchKit[ImageSource, str], list[ImageSource]]:
    chain = image_caption_chain(llm, prompt, detail=detail, max_bytes=max_bytes, max_side=max_side)
    kit = batchkit(
        chain,
        max_concurrency=max_concurrency,
        retry=retry,
        rate_limit=rate_limit,
        progress=progress,
        on_progress=on_progress,
        desc=desc,
    )
    return kit, expand_images(sources)


def caption_images(
    sources: ImageSource | Iterable[ImageSource],
    *,
    llm: ChatModel,
    prompt: Prompt = DEFAULT_PROMPT,
    detail: Detail | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_side: int | None = None,
    max_concurrency: MaxConcurrency = "auto",
    retry: RetryPolicy | None = DEFAULT_RETRY,
    rate_limit: RateLimit | None = None,
    progress: bool | None = None,
    on_progress: ProgressCallback | None = None,
    desc: str | None = "captions",
    config: RunnableConfig | None = None,
) -> BatchResult[ImageSource, str]:
    """Caption many images; one :class:`ItemResult` per image, never failing the batch.

    Folders and glob patterns expand to their image files first (names only, see
    :func:`expand_images`); each image is then read, checked and encoded inside its
    own item, so the bar starts at once, memory is bounded by the items in flight,
    and a missing file, a non-image, an oversized image or an unsupported URL is
    that item's :class:`ImageSourceError` while the rest run. Model failures are
    retried per item like any batchkit run, and ``results.retry_failed()`` re-runs
    only the failed images.

    Args:
        sources: URLs, paths, folders, glob patterns, bytes, PIL images (or one of them).
        llm: a chat model that takes OpenAI-style image parts; with ``ChatOpenAI``
            pass ``max_retries=0`` and let ``retry`` decide.
        prompt: the text sent with each image, or a function of the source's
            description (its path or URL) returning it.
        detail: ``"low"``, ``"high"`` or ``"auto"``, passed through to each image part.
        max_bytes: the largest image sent (default 20 MB, OpenAI's limit).
        max_side: downscale images whose longer side is larger instead of failing
            (needs ``pip install 'langchain-batchkit[images]'``).
        max_concurrency: items in flight, as for :func:`batchkit`.
        retry: the per-item retry policy, as for :func:`batchkit`.
        rate_limit: a shared :class:`RateLimit` pacing the model requests.
        progress: show the progress bar (``None``: for 10+ images).
        on_progress: called with a :class:`ProgressEvent` per finished image.
        desc: the bar's label.
        config: a RunnableConfig for every item (callbacks, tags, metadata).

    Returns:
        A :class:`BatchResult`: ``input`` is the source (after expansion), ``output``
        the caption. :func:`to_csv` / :func:`to_jsonl` export it.

    Example:
        >>> results = caption_images("photos/", llm=ChatOpenAI(model="gpt-4o-mini",
        ...                          max_retries=0), max_concurrency=8)  # doctest: +SKIP
        >>> to_csv(results, "captions.csv")                               # doctest: +SKIP
    """
    kit, inputs = _caption_kit(
        sources,
        llm,
        prompt,
        detail,
        max_bytes,
        max_side,
        max_concurrency,
        retry,
        rate_limit,
        progress,
        on_progress,
        desc,
    )
    return kit.batch(inputs, config)


async def acaption_images(
    sources: ImageSource | Iterable[ImageSource],
    *,
    llm: ChatModel,
    prompt: Prompt = DEFAULT_PROMPT,
    detail: Detail | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_side: int | None = None,
    max_concurrency: MaxConcurrency = "auto",
    retry: RetryPolicy | None = DEFAULT_RETRY,
    rate_limit: RateLimit | None = None,
    progress: bool | None = None,
    on_progress: ProgressCallback | None = None,
    desc: str | None = "captions",
    config: RunnableConfig | None = None,
) -> BatchResult[ImageSource, str]:
    """Async twin of :func:`caption_images`.

    Example:
        >>> results = await acaption_images(paths, llm=llm)  # doctest: +SKIP
    """
    kit, inputs = _caption_kit(
        sources,
        llm,
        prompt,
        detail,
        max_bytes,
        max_side,
        max_concurrency,
        retry,
        rate_limit,
        progress,
        on_progress,
        desc,
    )
    return await kit.abatch(inputs, config)
