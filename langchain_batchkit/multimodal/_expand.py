"""Folders and glob patterns become their image files, in a stable order."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from langchain_batchkit.multimodal._sources import (
    IMAGE_SUFFIXES,
    ImageSource,
    folder_images,
    has_glob_magic,
    url_scheme,
)

__all__ = ["expand_images"]


def expand_images(sources: ImageSource | Iterable[ImageSource]) -> list[ImageSource]:
    """Replace each folder and glob pattern by its image files, sorted by name.

    Only names are listed here, nothing is read, so a batch over a folder of 100,000
    photos starts at once. A folder contributes the image files directly in it
    (``.png .jpg .jpeg .gif .webp``, any case; hidden files skipped); a pattern
    (``"shots/**/*.png"``, recursive ``**`` allowed) the image files it matches. A
    folder or pattern with no image file is kept as is, so it shows up as that item's
    error instead of vanishing. URLs, bytes, PIL images and plain files pass through,
    in the order given. A single ``str`` or ``Path`` is one source, not a sequence.

    Args:
        sources: one source, or an iterable of them.

    Returns:
        The sources to caption, in order: ``str`` entries expand to ``str`` paths,
        ``Path`` entries to ``Path``\\s.

    Example:
        >>> expand_images(["photos/", "https://example.com/a.png"])  # doctest: +SKIP
        ['photos/a.jpg', 'photos/b.png', 'https://example.com/a.png']
    """
    if isinstance(sources, (str, bytes, bytearray, os.PathLike)) or not isinstance(
        sources, Iterable
    ):
        sources = [sources]
    expanded: list[ImageSource] = []
    for source in sources:
        expanded.extend(_expand_one(source))
    return expanded


def _expand_one(source: ImageSource) -> list[ImageSource]:
    if isinstance(source, str):
        if url_scheme(source) is not None:
            return [source]
        path = Path(source).expanduser()
        if path.is_dir():
            files = folder_images(path)
            return [os.path.join(source, f.name) for f in files] if files else [source]
        if has_glob_magic(source) and not path.exists():
            return list(_glob_images(source)) or [source]
        return [source]
    if isinstance(source, os.PathLike):
        path = Path(os.fsdecode(os.fspath(source)))
        if path.expanduser().is_dir():
            return [path / f.name for f in folder_images(path.expanduser())] or [source]
    return [source]


def _glob_images(pattern: str) -> list[str]:
    matches = glob.glob(os.path.expanduser(pattern), recursive=True)
    return sorted(m for m in matches if m.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(m))
