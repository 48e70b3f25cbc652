"""A small ``multipart/form-data`` parser (RFC 7578), enough for OpenAI file uploads.

The standard library's ``cgi`` module is gone and ``email`` parses MIME messages, not
form bodies, so this reads the few shapes real clients send: quoted or bare
parameters, backslash escapes, httpx's ``%22`` for a quote in a filename, and
RFC 5987 ``filename*=utf-8''...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import unquote

from langchain_batchkit.testing._fakeserver._http import InvalidRequest

__all__ = ["FormPart", "parse_form_data", "parse_header_value"]

_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


@dataclass(frozen=True, slots=True)
class FormPart:
    """One field of a form: its value (``data``) and, for a file, its name and type."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str = "text/plain"

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def parse_header_value(value: str) -> tuple[str, dict[str, str]]:
    """``'form-data; name="file"'`` → ``("form-data", {"name": "file"})``; keys lower-cased."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        key, raw = match[1].lower(), match[2].strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key] = raw
    extended = params.pop("filename*", None)
    if extended is not None:
        charset, _, encoded = extended.partition("''")
        params["filename"] = unquote(encoded, encoding=charset or "utf-8", errors="replace")
    elif "filename" in params:
        params["filename"] = params["filename"].replace("%22", '"')
    return main.strip().lower(), params


def parse_form_data(content_type: str, body: bytes) -> Mapping[str, FormPart]:
    """The fields of a ``multipart/form-data`` body by name (the last one wins).

    Raises:
        InvalidRequest: if the body is not well-formed multipart/form-data.
    """
    mime, params = parse_header_value(content_type)
    boundary = params.get("boundary", "")
    if mime != "multipart/form-data" or not boundary:
        raise InvalidRequest(
            "Expected a multipart/form-data body with a boundary "
            f"(got Content-Type {mime or '(none)'!r})."
        )
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    pieces = (b"\r\n" + body).split(delimiter)
    parts: dict[str, FormPart] = {}
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            return MappingProxyType(parts)
        part = _parse_part(piece.lstrip(b" \t"))
        parts[part.name] = part
    raise InvalidRequest("The multipart/form-data body has no closing boundary.")


def _parse_part(piece: bytes) -> FormPart:
    if not piece.startswith(b"\r\n"):
        raise InvalidRequest("Malformed multipart/form-data part: no line break after boundary.")
    head, sep, data = piece[2:].partition(b"\r\n\r\n")
    if not sep:
        raise InvalidRequest("Malformed multipart/form-data part: its headers never end.")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", errors="replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    disposition, params = parse_header_value(headers.get("content-disposition", ""))
    if disposition != "form-data" or "name" not in params:
        raise InvalidRequest(
            "Malformed multipart/form-data part: expected "
            "'Content-Disposition: form-data; name=...'."
        )
    return FormPart(
        name=params["name"],
        data=data,
        filename=params.get("filename"),
        content_type=headers.get("content-type", "text/plain"),
    )
