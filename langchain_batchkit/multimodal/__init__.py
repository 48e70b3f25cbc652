"""Images in, captions out: image messages for chat models, and batch captioning.

Sources are http(s) URLs (sent as is), data URLs, local paths (``str``/``Path``),
folders and glob patterns (expanded to their image files), ``bytes``, and PIL images
(``pip install 'langchain-batchkit[images]'``). Each image is read and checked inside
its own item, so a broken one is that item's :class:`ImageSourceError` and the rest
of the batch runs. :func:`caption_images` takes every :func:`batchkit` option, a
checkpoint included (keyed by :func:`image_key`, each image's path or URL).

Example:
    >>> from langchain_batchkit.multimodal import caption_images, to_csv   # doctest: +SKIP
    >>> results = caption_images("photos/", llm=ChatOpenAI(model="gpt-4o-mini",
    ...                          max_retries=0))                           # doctest: +SKIP
    >>> results.failed, to_csv(results, "captions.csv")                    # doctest: +SKIP
    >>> results.show()   # thumbnails with their captions, in a notebook   # doctest: +SKIP
"""

from langchain_batchkit.multimodal._chain import (
    ChatModel,
    acaption_images,
    caption_images,
    image_caption_chain,
    image_key,
)
from langchain_batchkit.multimodal._expand import expand_images
from langchain_batchkit.multimodal._export import (
    CAPTION_COLUMNS,
    CaptionRecord,
    captions_to_records,
    to_csv,
    to_jsonl,
)
from langchain_batchkit.multimodal._grid import CaptionResults, ThumbnailGrid, thumbnail_grid
from langchain_batchkit.multimodal._messages import (
    DEFAULT_PROMPT,
    Prompt,
    image_message,
    image_part,
)
from langchain_batchkit.multimodal._sources import (
    DEFAULT_MAX_BYTES,
    IMAGE_SUFFIXES,
    Detail,
    ImageSource,
    ImageSourceError,
    describe_source,
    detect_image_mime,
    image_url,
)

__all__ = [
    "CAPTION_COLUMNS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_PROMPT",
    "IMAGE_SUFFIXES",
    "CaptionRecord",
    "CaptionResults",
    "ChatModel",
    "Detail",
    "ImageSource",
    "ImageSourceError",
    "Prompt",
    "ThumbnailGrid",
    "acaption_images",
    "caption_images",
    "captions_to_records",
    "describe_source",
    "detect_image_mime",
    "expand_images",
    "image_caption_chain",
    "image_key",
    "image_message",
    "image_part",
    "image_url",
    "thumbnail_grid",
    "to_csv",
    "to_jsonl",
]
