"""The caption chain, and captioning many images with batchkit."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from langchain_batchkit._options import KitOptions
from langchain_batchkit._runner import BatchKit
from langchain_batchkit.multimodal._expand import expand_images
from langchain_batchkit.multimodal._grid import CaptionResults
from langchain_batchkit.multimodal._messages import DEFAULT_PROMPT, MessageBuilder, Prompt
from langchain_batchkit.multimodal._sources import (
    DEFAULT_MAX_BYTES,
    Detail,
    ImageLimits,
    ImageSource,
    _pil_image_type,
    url_scheme,
)

__all__ = ["ChatModel", "acaption_images", "caption_images", "image_caption_chain", "image_key"]

ChatModel = Runnable[list[BaseMessage], Any]
"""A chat model taking OpenAI-style image parts (``ChatOpenAI``, or any Runnable like it)."""

# The chain's declared input type: a source may be bytes or a PIL image, which no JSON
# schema describes, so the schema says "anything" rather than failing to build.
_ANY_SOURCE: Any = Any

#: The kit options of a caption run before the caller's: only the bar's label differs.
_CAPTION_OPTIONS = KitOptions(desc="captions")


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


def image_key(source: ImageSource) -> str:
    """The checkpoint key of an image: its path or URL, or a hash of its data.

    Why not the index: a resumed caption run often lists a folder that has gained,
    lost or reordered files since, and a key naming the file keeps every stored
    caption with its own image. In-memory images (bytes, PIL) and data URLs are
    keyed by a SHA-256 of their content, so the same image resumes as the same item.
    A file name that is not UTF-8 keeps its lone surrogates as ``\\udce9`` text, as
    the key is stored as UTF-8.

    Example:
        >>> image_key("photos/cat.jpg"), image_key(b"GIF89a")[:15]
        ('photos/cat.jpg', 'sha256:610f5ae4')
    """
    if isinstance(source, str) and url_scheme(source) != "data":
        return _utf8_text(source)
    if isinstance(source, os.PathLike):
        return _utf8_text(os.fsdecode(os.fspath(source)))
    if isinstance(source, str):
        return _sha256(source.encode("utf-8", "surrogatepass"))
    if isinstance(source, bytes | bytearray):
        return _sha256(source)
    pil = _pil_image_type()
    if pil is not None and isinstance(source, pil):
        width, height = source.size
        return _sha256(f"{source.mode} {width}x{height} ".encode(), source.tobytes())
    # Not an image source: the item fails anyway; key it by identity so it never
    # shares a key (and a stored result) with another input.
    return f"<{type(source).__qualname__} at {id(source):#x}>"


def _utf8_text(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _sha256(*parts: bytes | bytearray) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return f"sha256:{digest.hexdigest()}"


def _caption_kit(
    sources: ImageSource | Iterable[ImageSource],
    llm: ChatModel,
    prompt: Prompt,
    detail: Detail | None,
    max_bytes: int,
    max_side: int | None,
    options: Mapping[str, Any],
) -> tuple[BatchKit[ImageSource, str], list[ImageSource]]:
    """The kit and the expanded inputs of a caption run; ``options`` are kit options
    by name, validated by :class:`KitOptions` (an unknown name raises)."""
    opts = _CAPTION_OPTIONS.replace(options)
    if opts.checkpoint is not None and opts.key is None:
        opts = opts.replace({"key": image_key})
    chain = image_caption_chain(llm, prompt, detail=detail, max_bytes=max_bytes, max_side=max_side)
    return BatchKit(chain, opts), expand_images(sources)


def caption_images(
    sources: ImageSource | Iterable[ImageSource],
    *,
    llm: ChatModel,
    prompt: Prompt = DEFAULT_PROMPT,
    detail: Detail | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_side: int | None = None,
    config: RunnableConfig | None = None,
    **options: Any,
) -> CaptionResults:
    """Caption many images; one :class:`ItemResult` per image, never failing the batch.

    Folders and glob patterns expand to their image files first (names only, see
    :func:`expand_images`); each image is then read, checked and encoded inside its
    own item, so the bar starts at once, memory is bounded by the items in flight,
    and a missing file, a non-image, an oversized image or an unsupported URL is
    that item's :class:`ImageSourceError` while the rest run. Model failures are
    retried per item like any batchkit run, and ``results.retry_failed()`` re-runs
    only the failed images. With ``checkpoint=``, a second run returns the stored
    captions and calls the model only for images it has not captioned.

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
        config: a RunnableConfig for every item (callbacks, tags, metadata).
        **options: any :func:`batchkit` option, by the same name and with the same
            meaning (``max_concurrency=8``, ``retry=``, ``rate_limit=``,
            ``checkpoint="captions.sqlite"``, ``on_progress=``, ...); a name that is
            not one raises :class:`ConfigurationError`. Defaults differ in two:
            ``desc`` is ``"captions"``, and with a checkpoint ``key`` is
            :func:`image_key` (the path or URL), so a resumed run over a folder that
            changed still matches each stored caption to its file.

    Returns:
        A :class:`CaptionResults` (a :class:`BatchResult`): ``input`` is the source
        (after expansion), ``output`` the caption. :func:`to_csv` / :func:`to_jsonl`
        export it; ``results.show()`` shows the thumbnails with their captions.

    Example:
        >>> results = caption_images("photos/", llm=ChatOpenAI(model="gpt-4o-mini",
        ...                          max_retries=0), max_concurrency=8,
        ...                          checkpoint="captions.sqlite")        # doctest: +SKIP
        >>> to_csv(results, "captions.csv")                               # doctest: +SKIP
    """
    kit, inputs = _caption_kit(sources, llm, prompt, detail, max_bytes, max_side, options)
    return CaptionResults.of(kit.batch(inputs, config))


async def acaption_images(
    sources: ImageSource | Iterable[ImageSource],
    *,
    llm: ChatModel,
    prompt: Prompt = DEFAULT_PROMPT,
    detail: Detail | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_side: int | None = None,
    config: RunnableConfig | None = None,
    **options: Any,
) -> CaptionResults:
    """Async twin of :func:`caption_images`; takes the same arguments and options.

    Example:
        >>> results = await acaption_images(paths, llm=llm, checkpoint="c.sqlite")  # doctest: +SKIP
    """
    kit, inputs = _caption_kit(sources, llm, prompt, detail, max_bytes, max_side, options)
    return CaptionResults.of(await kit.abatch(inputs, config))
