"""Image sources: what a caller may pass, and how each one becomes an image URL.

A source is checked and encoded only when its item runs (see ``_messages.py``), so a
broken file fails that one item, and no file is read before its item starts.
Local data is sent as a base64 data URL whose MIME type comes from the bytes'
magic numbers, never from the file name: a PNG saved as ``.jpg`` is ``image/png``,
which is what the API checks.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, Union
from urllib.parse import urlsplit

from langchain_batchkit._errors import ConfigurationError, ImageSourceError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "DEFAULT_MAX_BYTES",
    "IMAGE_SUFFIXES",
    "Detail",
    "ImageLimits",
    "ImageSource",
    "ImageSourceError",
    "describe_source",
    "detect_image_mime",
    "folder_images",
    "has_glob_magic",
    "image_url",
    "is_cheap_to_encode",
    "require_pillow",
    "url_scheme",
]

logger = logging.getLogger(__name__)

ImageSource: TypeAlias = Union[str, "os.PathLike[str]", bytes, bytearray, "PILImage"]
"""An image: an http(s) or data URL, a local path (``str``/``Path``), raw bytes, or a PIL image."""

Detail = Literal["low", "high", "auto"]
"""The OpenAI ``detail`` of an image part: how many tokens the model spends looking."""

#: OpenAI's per-image upload limit.
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
#: Images up to this size are encoded on the event loop: a thread hop costs more than that.
INLINE_MAX_BYTES = 64 * 1024
#: File suffixes a folder or glob expands to (the formats the chat APIs accept).
IMAGE_SUFFIXES = (".gif", ".jpeg", ".jpg", ".png", ".webp")

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]+):")
_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)", re.DOTALL)
_GLOB_MAGIC = re.compile(r"[*?[]")
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
_PIL_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
}


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """How large an encoded image may be, validated once before a batch starts.

    Attributes:
        max_bytes: the largest image (after any downscaling) sent; larger fails the item.
        max_side: with Pillow, images whose longer side exceeds this are downscaled
            (aspect ratio kept, same format) before the size check; ``None`` never
            decodes an image.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_side: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_side"):
            value = getattr(self, name)
            if value is None and name == "max_side":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                expected = "None or an int >= 1" if name == "max_side" else "an int >= 1"
                raise ConfigurationError(f"{name} must be {expected}, got {value!r}")
        if self.max_side is not None:
            require_pillow("max_side")


def require_pillow(feature: str) -> Any:
    """Import ``PIL.Image`` for ``feature``, or say which extra installs it.

    Example:
        >>> require_pillow("max_side")  # doctest: +SKIP
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            f"{feature} needs Pillow: pip install 'langchain-batchkit[images]'"
        ) from exc
    return Image


def detect_image_mime(data: bytes) -> str | None:
    """The MIME type of image bytes, from their magic numbers; ``None`` if not one we send.

    The file name is never trusted: chat APIs check the declared type against the
    bytes and refuse a mismatch with a 400.

    Example:
        >>> detect_image_mime(b"\\x89PNG\\r\\n\\x1a\\n...")
        'image/png'
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def url_scheme(text: str) -> str | None:
    """The lowercase URL scheme of ``text`` (``"https"``, ``"ftp"``), or ``None`` for a path.

    One-letter schemes are Windows drive letters (``C:\\photos``), not URLs.
    """
    match = _SCHEME.match(text)
    return match[1].lower() if match else None


def has_glob_magic(text: str) -> bool:
    """Whether ``text`` is a glob pattern (contains ``*``, ``?`` or ``[``)."""
    return _GLOB_MAGIC.search(text) is not None


def folder_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name; hidden files skipped like glob."""
    return sorted(
        p
        for p in folder.iterdir()
        if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def _pil_image_type() -> type[Any] | None:
    # A PIL image can only exist once PIL.Image was imported, so this never imports it.
    module = sys.modules.get("PIL.Image")
    return getattr(module, "Image", None) if module is not None else None


def describe_source(source: object) -> str:
    """A short, readable name for a source: its path or URL, or what kind of data it is.

    This is what records and errors show, so base64 and raw bytes never flood a CSV.

    Example:
        >>> describe_source(b"\\x89PNG...")
        '<bytes 7>'
    """
    if isinstance(source, str):
        if url_scheme(source) == "data":
            match = _DATA_URL.match(source)
            mime = match["mime"] if match and match["mime"] else "?"
            return f"<data URL {mime}, {len(source)} chars>"
        return source
    if isinstance(source, os.PathLike):
        return os.fsdecode(os.fspath(source))
    if isinstance(source, (bytes, bytearray)):
        return f"<bytes {len(source)}>"
    pil = _pil_image_type()
    if pil is not None and isinstance(source, pil):
        width, height = source.size
        return f"<PIL image {width}x{height} {source.mode}>"
    return f"<{type(source).__name__} object>"


def image_url(
    source: ImageSource, *, max_bytes: int = DEFAULT_MAX_BYTES, max_side: int | None = None
) -> str:
    """The URL to send for ``source``: an http(s) URL as is, anything local as a data URL.

    Reads and encodes the image (blocking); raises :class:`ImageSourceError` naming the
    source when it cannot be sent.

    Args:
        source: an http(s) URL, a data URL, a local path, bytes, or a PIL image.
        max_bytes: the largest image sent (the default is OpenAI's 20 MB).
        max_side: downscale images whose longer side is larger (needs Pillow).

    Returns:
        The URL for an ``image_url`` content part.

    Example:
        >>> image_url("photos/cat.jpg")[:23]  # doctest: +SKIP
        'data:image/jpeg;base64,'
    """
    return encode_source(source, ImageLimits(max_bytes, max_side))


def encode_source(source: ImageSource, limits: ImageLimits) -> str:
    """:func:`image_url` with limits already validated (the per-item path)."""
    label = describe_source(source)
    if isinstance(source, str):
        scheme = url_scheme(source)
        if scheme in ("http", "https"):
            if not urlsplit(source).netloc:
                raise ImageSourceError(label, "is not a valid URL: it has no host")
            return source
        if scheme == "data":
            return _encode(_decode_data_url(source, label), label, limits)
        if scheme is not None and not os.path.exists(source):
            raise ImageSourceError(
                label,
                f"unsupported URL scheme '{scheme}:' (send an http(s) URL, a data URL, a "
                "local path, bytes or a PIL image)",
            )
        return _from_path(Path(source).expanduser(), label, limits)
    if isinstance(source, os.PathLike):
        return _from_path(Path(os.fsdecode(os.fspath(source))).expanduser(), label, limits)
    if isinstance(source, (bytes, bytearray)):
        return _encode(bytes(source), label, limits)
    pil = _pil_image_type()
    if pil is not None and isinstance(source, pil):
        return _encode(_pil_bytes(source, label, limits.max_side), label, limits, resized=True)
    raise ImageSourceError(
        label,
        f"unsupported image source of type {type(source).__name__} (expected a URL, a path, "
        "bytes or a PIL image)",
    )


def is_cheap_to_encode(source: ImageSource, limits: ImageLimits) -> bool:
    """Whether encoding ``source`` takes so little time that a worker thread would cost more.

    True for http(s) URLs, for data, bytes and files of at most ``INLINE_MAX_BYTES``
    (reading and base64-encoding 64 KB takes about a tenth of a millisecond), and for
    sources that will fail at once. False whenever Pillow has to decode or encode.
    Only a ``stat`` is done here.
    """
    if limits.max_side is not None:
        return False
    if isinstance(source, (bytes, bytearray)):
        return len(source) <= INLINE_MAX_BYTES
    if isinstance(source, str):
        scheme = url_scheme(source)
        if scheme == "data":
            return len(source) <= INLINE_MAX_BYTES * 4 // 3 + 64
        if scheme is not None:
            return True
    if isinstance(source, (str, os.PathLike)):
        try:
            return os.stat(source).st_size <= INLINE_MAX_BYTES
        except (OSError, ValueError):
            return True
    pil = _pil_image_type()
    return pil is None or not isinstance(source, pil)


def _read_file(path: Path) -> bytes:
    return path.read_bytes()


def _from_path(path: Path, label: str, limits: ImageLimits) -> str:
    try:
        info = path.stat()
    except FileNotFoundError:
        if has_glob_magic(str(path)):
            reason = f"no image file ({', '.join(IMAGE_SUFFIXES)}) matches this pattern"
        else:
            reason = "no such file"
        raise ImageSourceError(label, reason) from None
    except OSError as exc:
        raise ImageSourceError(label, f"cannot be read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(info.st_mode):
        if folder_images(path):
            raise ImageSourceError(
                label, "is a folder: expand_images() or caption_images() expand folders"
            )
        raise ImageSourceError(
            label, f"is a folder with no image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    if not stat.S_ISREG(info.st_mode):
        raise ImageSourceError(label, "is not a regular file")
    if info.st_size > limits.max_bytes and limits.max_side is None:
        raise ImageSourceError(label, _too_large(info.st_size, limits))
    try:
        data = _read_file(path)
    except OSError as exc:
        raise ImageSourceError(label, f"cannot be read ({exc.strerror or exc})") from exc
    return _encode(data, label, limits)


def _decode_data_url(url: str, label: str) -> bytes:
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise ImageSourceError(label, "is not a valid data URL (expected 'data:<type>;base64,…')")
    if ";base64" not in match["params"].lower():
        raise ImageSourceError(label, "is a data URL that is not base64-encoded")
    try:
        return base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageSourceError(label, "is a data URL whose data is not valid base64") from exc


def _encode(data: bytes, label: str, limits: ImageLimits, *, resized: bool = False) -> str:
    if not data:
        raise ImageSourceError(label, "is empty")
    mime = detect_image_mime(data)
    if mime is None:
        raise ImageSourceError(
            label, f"is not a PNG, JPEG, GIF or WEBP image (it starts with {data[:8]!r})"
        )
    if limits.max_side is not None and not resized:
        data = _downscale(data, mime, label, limits.max_side)
    if len(data) > limits.max_bytes:
        raise ImageSourceError(label, _too_large(len(data), limits))
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _too_large(size: int, limits: ImageLimits) -> str:
    hint = (
        "; pass max_side=... to downscale it (needs Pillow)"
        if limits.max_side is None
        else f" even after downscaling to max_side={limits.max_side}"
    )
    return f"is {size:,} bytes, over the limit of max_bytes={limits.max_bytes:,}{hint}"


def _downscale(data: bytes, mime: str, label: str, max_side: int) -> bytes:
    """Shrink the image so its longer side is at most ``max_side``, in the same format."""
    image_module = require_pillow("max_side")
    try:
        with image_module.open(io.BytesIO(data)) as image:
            if max(image.size) <= max_side:
                return data
            original = image.size
            image.thumbnail((max_side, max_side))
            out = io.BytesIO()
            image.save(out, format=_PIL_FORMATS[mime], **_save_options(mime))
    except Exception as exc:  # Pillow raises OSError, ValueError, DecompressionBombError...
        raise ImageSourceError(label, f"cannot be decoded to downscale it ({exc})") from exc
    logger.debug("downscaled %s from %s to %s", label, original, image.size)
    return out.getvalue()


def _save_options(mime: str) -> dict[str, Any]:
    if mime in ("image/jpeg", "image/webp"):
        return {"quality": 90}
    return {"optimize": True} if mime == "image/png" else {}


def _pil_bytes(image: PILImage, label: str, max_side: int | None) -> bytes:
    """Encode a PIL image: JPEG ones stay JPEG, everything else becomes lossless PNG."""
    try:
        if max_side is not None and max(image.size) > max_side:
            image = image.copy()  # never resize the caller's image in place
            image.thumbnail((max_side, max_side))
        out = io.BytesIO()
        if image.format == "JPEG" and image.mode in ("RGB", "L"):
            image.save(out, format="JPEG", quality=90)
        else:
            if image.mode not in _PNG_MODES:
                has_alpha = "A" in image.mode or "transparency" in image.info
                image = image.convert("RGBA" if has_alpha else "RGB")
            image.save(out, format="PNG", optimize=True)
    except Exception as exc:  # Pillow's errors have no common base class
        raise ImageSourceError(label, f"cannot be encoded ({exc})") from exc
    return out.getvalue()
