"""Image parts of chat messages: refused the way the real API refuses them."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from langchain_batchkit.testing._fakeserver._exchange import InvalidRequest

__all__ = ["check_image_url"]

_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*);base64,(?P<data>.*)", re.DOTALL | re.IGNORECASE)
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def _has_magic(mime: str, data: bytes) -> bool:
    if mime == "image/png":
        return data.startswith(b"\x89PNG\r\n\x1a\n")
    if mime == "image/jpeg":
        return data.startswith(b"\xff\xd8\xff")
    if mime == "image/gif":
        return data[:6] in (b"GIF87a", b"GIF89a")
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def check_image_url(part: Mapping[str, object], param: str) -> None:
    """Refuse image parts the real API would refuse, with a message saying why.

    Catches the classic batch bugs early: a file path instead of a URL, a data URL
    with broken base64, or bytes of one type labelled as another.
    """
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, Mapping) else None
    param = f"{param}.image_url.url"
    if not isinstance(url, str) or not url:
        raise InvalidRequest(
            f"Invalid image: '{param}' must be a non-empty string.",
            param=param,
            code="invalid_image_url",
        )
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        if not urlsplit(url).netloc:
            raise InvalidRequest(
                f"Invalid image URL: {url[:80]!r} has no host.",
                param=param,
                code="invalid_image_url",
            )
        return
    if scheme != "data":
        raise InvalidRequest(
            f"Invalid image URL scheme {scheme or '(none)'!r}: expected an http(s) URL or a "
            "'data:image/<png|jpeg|gif|webp>;base64,...' data URL.",
            param=param,
            code="invalid_image_url",
        )
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise InvalidRequest(
            "Invalid image data URL: expected 'data:image/<png|jpeg|gif|webp>;base64,<data>'.",
            param=param,
            code="invalid_image_format",
        )
    mime = match["mime"].lower()
    if mime not in _IMAGE_TYPES:
        raise InvalidRequest(
            f"Unsupported image type {mime!r}: expected one of {', '.join(_IMAGE_TYPES)}.",
            param=param,
            code="invalid_image_format",
        )
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            f"Invalid image data: the {mime} data URL is not valid base64.",
            param=param,
            code="invalid_image_format",
        ) from exc
    if not _has_magic(mime, data):
        raise InvalidRequest(
            f"Invalid image data: the decoded bytes do not start with the {mime} signature "
            "(wrong type label or corrupt image).",
            param=param,
            code="invalid_image_format",
        )
