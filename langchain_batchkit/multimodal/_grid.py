"""Caption results as a picture: small thumbnails with their captions, in plain HTML.

The grid is one ``<table>`` of ``<img>`` tags with base64 data URLs: no script, no
external file, no CSS that a sanitiser must keep, so it shows the same in
JupyterLab, VS Code, Colab and a notebook rendered on GitHub. Its size is bounded:
at most ``max_items`` images, each at most ``side`` pixels on its longer side and a
few kilobytes, and at most ``max_bytes`` of pictures in all. Captions and errors
are HTML-escaped: a caption holding ``<script>`` is shown as text, never run. URLs
are never fetched: a remote image shows its address instead of a picture.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_batchkit._errors import describe_exception, redact_secrets
from langchain_batchkit._results import BatchResult, ItemResult
from langchain_batchkit.multimodal._sources import (
    ImageSource,
    _decode_data_url,
    _pil_image_type,
    describe_source,
    require_pillow,
    url_scheme,
)

__all__ = ["CaptionResults", "ThumbnailGrid", "thumbnail_grid"]

logger = logging.getLogger(__name__)

#: Defaults of :func:`thumbnail_grid`: images shown, pixels per side, bytes in all.
MAX_ITEMS, MAX_SIDE, MAX_GRID_BYTES = 48, 128, 600_000
#: The most bytes one thumbnail may take (it is re-encoded smaller past that).
MAX_THUMBNAIL_BYTES = 12_000
#: Files larger than this are not opened for a thumbnail.
MAX_SOURCE_BYTES = 64 * 1024 * 1024
#: Characters of a caption or error shown under its image.
MAX_TEXT = 240

_OK, _FAILED = "#2e7d32", "#c62828"


@dataclass(frozen=True, slots=True)
class ThumbnailGrid:
    """An HTML grid of images and captions; a notebook displays it as is.

    Attributes:
        html: the grid (a ``<div>`` holding a ``<table>``).
        shown: items in the grid.
        total: items in the results.
    """

    html: str
    shown: int
    total: int

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"ThumbnailGrid({self.shown} of {self.total} items, {len(self.html):,} bytes)"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the grid as a standalone HTML page; returns its path."""
        target = Path(path)
        target.write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>captions</title></head>"
            f"<body style='font-family:sans-serif'>{self.html}</body></html>",
            encoding="utf-8",
        )
        return target


def thumbnail_grid(
    results: Iterable[ItemResult[Any, Any]],
    *,
    max_items: int = MAX_ITEMS,
    side: int = MAX_SIDE,
    columns: int = 6,
    max_bytes: int = MAX_GRID_BYTES,
) -> ThumbnailGrid:
    """Thumbnails of caption results, each with its caption or, if it failed, its error.

    Needs Pillow (``pip install 'langchain-batchkit[images]'``).

    Args:
        results: caption results (``input`` is the image source, ``output`` the caption).
        max_items: the most items shown; the rest are counted below the grid.
        side: the longest side of a thumbnail, in pixels.
        columns: thumbnails per row.
        max_bytes: the most bytes of pictures in the grid; past it, items are
            shown with their caption and no picture.

    Returns:
        A :class:`ThumbnailGrid` (``_repr_html_`` for notebooks, ``.save(path)``).

    Example:
        >>> results = caption_images("photos/", llm=llm)     # doctest: +SKIP
        >>> thumbnail_grid(results.failed)                   # doctest: +SKIP
    """
    for name, value in (("max_items", max_items), ("side", side), ("columns", columns)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    items = list(results)
    pictured = items[:max_items]
    budget = max_bytes
    cells = []
    for result in pictured:
        url = _thumbnail(result.input, side) if budget > 0 else None
        if url is not None:
            budget -= len(url)
            if budget < 0:
                url = None
        cells.append(_cell(result, url, side))
    rows = "".join(
        "<tr>" + "".join(cells[k : k + columns]) + "</tr>" for k in range(0, len(cells), columns)
    )
    failed = sum(1 for r in items if r.error is not None)
    head = (
        f"<b>{len(items)} images</b>: <span style='color:{_OK}'>{len(items) - failed} captioned"
        f"</span> · <span style='color:{_FAILED if failed else 'inherit'}'>{failed} failed</span>"
    )
    more = (
        f"<p>… and {len(items) - len(pictured)} more not shown (max_items={max_items})</p>"
        if len(items) > len(pictured)
        else ""
    )
    table = f"<table style='table-layout:fixed;border-collapse:collapse'>{rows}</table>"
    page = f"<div>{head}{table}{more}</div>"
    return ThumbnailGrid(page, len(pictured), len(items))


def _cell(result: ItemResult[Any, Any], url: str | None, side: int) -> str:
    name = html.escape(_short(_name_of(result.input), 40))
    if url is not None:
        picture = f"<img src='{url}' alt='{name}' style='max-width:{side}px;max-height:{side}px'>"
    else:
        picture = (
            f"<div style='width:{side}px;height:{side // 2}px;line-height:{side // 2}px;"
            "margin:auto;background:#eeeeee;color:#757575;font-size:11px'>no preview</div>"
        )
    if result.error is None:
        colour = _OK
        text = html.escape(_short(str(result.output), MAX_TEXT))
    else:
        colour = _FAILED
        error = redact_secrets(str(result.error))
        text = f"<b>✗ failed</b>: {html.escape(_short(error, MAX_TEXT))}"
    return (
        f"<td style='vertical-align:top;text-align:center;width:{side + 8}px;"
        f"max-width:{side + 8}px;border:2px solid {colour};padding:4px;"
        f"overflow-wrap:anywhere'>{picture}<br><small><code>{name}</code></small><br>"
        f"<span style='font-size:12px;color:{colour if result.error else 'inherit'}'>"
        f"{text}</span></td>"
    )


def _name_of(source: object) -> str:
    label = describe_source(source)
    if isinstance(source, str | os.PathLike) and url_scheme(label) is None:
        return Path(label).name or label
    return label


def _thumbnail(source: object, side: int) -> str | None:
    """A small JPEG or PNG data URL of ``source``, or ``None`` when it has no preview."""
    try:
        image = _open(source)
        if image is None:
            return None
        return _encode(image, side)
    except Exception as exc:  # a broken image is shown without a picture, never raised
        logger.debug("no thumbnail for %s: %s", describe_source(source), describe_exception(exc))
        return None


def _open(source: object) -> Any:
    pil_image = require_pillow("thumbnails")
    pil = _pil_image_type()
    if pil is not None and isinstance(source, pil):
        return source.copy()
    if isinstance(source, bytes | bytearray):
        return pil_image.open(io.BytesIO(bytes(source)))
    if isinstance(source, str) and url_scheme(source) == "data":
        return pil_image.open(io.BytesIO(_decode_data_url(source, "data URL")))
    if isinstance(source, str) and url_scheme(source) is not None:
        return None  # a remote image is never fetched to draw a thumbnail
    if isinstance(source, str | os.PathLike):
        info = os.stat(source)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SOURCE_BYTES:
            return None
        return pil_image.open(os.fspath(source))
    return None


def _encode(image: Any, side: int) -> str:
    image.draft("RGB", (side, side))  # JPEG: decode at a reduced scale, much faster
    image.thumbnail((side, side))
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    for quality, scale in ((80, 1.0), (60, 1.0), (50, 0.6)):
        if scale != 1.0:
            small = max(1, int(side * scale))
            image.thumbnail((small, small))
        buffer = io.BytesIO()
        if has_alpha:
            image.save(buffer, format="PNG", optimize=True)
            mime = "image/png"
        else:
            image.save(buffer, format="JPEG", quality=quality, optimize=True)
            mime = "image/jpeg"
        data = buffer.getvalue()
        if len(data) <= MAX_THUMBNAIL_BYTES:
            break
    else:
        raise ValueError(f"a {side}px thumbnail is still {len(data):,} bytes")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _short(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class CaptionResults(BatchResult[ImageSource, str]):
    """The results of :func:`caption_images`: a :class:`BatchResult` that can show
    its images with their captions (:meth:`show`)."""

    @classmethod
    def of(cls, results: BatchResult[ImageSource, str]) -> CaptionResults:
        """The same results (and kit, config, timeline) as CaptionResults."""
        made = cls(
            results,
            wall_time=results.wall_time,
            complete=results.complete,
            rerunner=results._rerunner,
            config=results._config,
            timeline=results.timeline,
        )
        made._unpickled = results._unpickled
        return made

    def show(
        self,
        *,
        max_items: int = MAX_ITEMS,
        side: int = MAX_SIDE,
        columns: int = 6,
        max_bytes: int = MAX_GRID_BYTES,
    ) -> ThumbnailGrid:
        """A grid of thumbnails with their captions; failed images marked with their error.

        The last expression of a notebook cell is displayed; elsewhere in a cell use
        ``display(results.show())``. See :func:`thumbnail_grid` for the arguments.

        Example:
            >>> results = caption_images("photos/", llm=llm)     # doctest: +SKIP
            >>> results.show(max_items=12)                       # doctest: +SKIP
        """
        return thumbnail_grid(
            self, max_items=max_items, side=side, columns=columns, max_bytes=max_bytes
        )
