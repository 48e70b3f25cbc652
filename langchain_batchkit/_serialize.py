"""Values to JSON and back, for checkpoints and exports, without pickle; and a
stable fingerprint of a value's content.

Plain JSON values stay themselves; LangChain objects (messages, documents, prompt
values) go through langchain-core's own serialisation (``dumpd``/``load``);
pydantic models store their class path and JSON data; bytes are base64. A value
none of these can express is stored as its ``repr`` (and loads as that string),
with a warning: the item's record is never lost for want of a format. A ``repr``
that raises leaves a placeholder naming the type. Text that UTF-8 cannot encode
(lone surrogates: a file name ``os.listdir`` decoded with ``surrogateescape``) is
stored with JSON ``\\u`` escapes, so it still round-trips exactly.

:func:`fingerprint_value` hashes a canonical encoding instead of the stored
form, so two equal inputs built in two processes agree even when the stored
form is a ``repr`` (NaN, dates, decimals, a pandas row) or iterates in hash
order (sets, dicts with non-str keys).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import hashlib
import importlib
import json
import logging
import math
import os
import re
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from langchain_core.load import dumpd, load
from langchain_core.load.serializable import Serializable
from pydantic import BaseModel

from langchain_batchkit._errors import redact_secrets

__all__ = [
    "decode_value",
    "dumps_value",
    "encode_value",
    "fingerprint_value",
    "json_text",
    "loads_value",
    "safe_repr",
    "to_jsonable",
]

logger = logging.getLogger(__name__)

_JSON_SCALARS = (str, int, bool, type(None))


def _is_plain_json(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 50:
        return False
    if isinstance(value, list):
        return all(_is_plain_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain_json(v, depth + 1) for k, v in value.items())
    return False


def safe_repr(value: Any) -> str:
    """``repr(value)``, or a placeholder naming the type when that ``repr`` raises."""
    try:
        return repr(value)
    except Exception as exc:
        return f"<{type(value).__name__}: repr() raised {type(exc).__name__}>"


def _encode(value: Any) -> dict[str, Any]:
    try:
        encoded = _try_encode(value)
    except Exception as exc:  # a model or dumper that cannot cope: keep the repr instead
        logger.warning(
            "a %s value failed to serialise (%s); keeping its repr", type(value).__name__, exc
        )
        return {"repr": redact_secrets(safe_repr(value))}
    if encoded is None:
        logger.warning(
            "a %s value cannot be stored as JSON; keeping its repr instead", type(value).__name__
        )
        return {"repr": redact_secrets(safe_repr(value))}
    return encoded


def _try_encode(value: Any) -> dict[str, Any] | None:
    if _is_plain_json(value):
        return {"json": value}
    if isinstance(value, Serializable) and value.is_lc_serializable():
        dumped = dumpd(value)
        # langchain-core marks parts it cannot express; such a value would not load back.
        return None if '"not_implemented"' in json.dumps(dumped) else {"lc": dumped}
    if isinstance(value, BaseModel):
        cls = type(value)
        if "<locals>" in cls.__qualname__:
            return None  # a class defined inside a function cannot be imported back
        return {
            "pydantic": f"{cls.__module__}:{cls.__qualname__}",
            "data": value.model_dump(mode="json"),
        }
    if isinstance(value, PurePath):
        return {"path": os.fspath(value)}
    if isinstance(value, bytes | bytearray):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return {"list": [_encode(v) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    return None


def encode_value(value: Any) -> dict[str, Any]:
    """``value`` as its tagged JSON-able form (what :func:`dumps_value` writes as text),
    for a value stored inside a larger JSON document; never raises.

    Example:
        >>> decode_value(encode_value((1, b"x")))
        (1, b'x')
    """
    data: dict[str, Any] = json.loads(dumps_value(value))  # plain JSON whatever the value
    return data


def decode_value(data: dict[str, Any]) -> Any:
    """Decode what :func:`encode_value` returned.

    Raises:
        ValueError / ImportError / ...: the data names an unknown format or a class
            that cannot be imported now.
    """
    return _decode(data)


def to_jsonable(value: Any) -> Any:
    """``value`` itself when it is plain JSON, else its tagged encoding (for exports)."""
    return value if _is_plain_json(value) else _encode(value)


def dumps_value(value: Any) -> str:
    """Encode ``value`` as a JSON string (see the module docstring); never raises.

    The text is valid UTF-8 (what SQLite stores): lone surrogates are escaped.
    """
    try:
        return json_text(_encode(value))
    except Exception as exc:  # a str or int subclass that JSON itself chokes on
        logger.warning(
            "a %s value cannot be stored (%s: %s); storing a placeholder",
            type(value).__name__, type(exc).__name__, exc,
        )  # fmt: skip
        return json.dumps({"repr": f"<{type(value).__name__}: could not be stored>"})


def json_text(data: Any) -> str:
    """Compact JSON that UTF-8 can encode: non-ASCII text kept as is, but lone
    surrogates (which UTF-8 cannot hold) written as ``\\u`` escapes, which
    ``json.loads`` turns back into the very same string."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text


def _decode(data: dict[str, Any]) -> Any:
    if "json" in data:
        return data["json"]
    if "lc" in data:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load(data["lc"], allowed_objects="core")
    if "pydantic" in data:
        module, _, qualname = str(data["pydantic"]).partition(":")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
            raise TypeError(f"{data['pydantic']} is not a pydantic model")
        return obj.model_validate(data["data"])
    if "path" in data:
        return Path(data["path"])
    if "bytes" in data:
        return base64.b64decode(data["bytes"])
    if "tuple" in data:
        return tuple(_decode(v) for v in data["tuple"])
    if "list" in data:
        return [_decode(v) for v in data["list"]]
    if "dict" in data:
        return {k: _decode(v) for k, v in data["dict"].items()}
    if "repr" in data:
        return data["repr"]
    raise ValueError(f"unknown stored value format: {sorted(data)}")


def loads_value(text: str) -> Any:
    """Decode what :func:`dumps_value` wrote."""
    return _decode(json.loads(text))


# -- fingerprints -------------------------------------------------------------------------------

_MAX_DEPTH = 100
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")
_DEFAULT_REPR: Any = object.__repr__


def fingerprint_value(value: Any) -> str:
    """A stable hash of ``value``'s content: equal values give equal fingerprints in
    any process, different ones (almost surely) differ; never raises.

    The hash covers a canonical encoding, not the stored JSON: NaN equals NaN; sets
    and dicts are order-independent (``PYTHONHASHSEED`` does not matter); dates,
    decimals, UUIDs, bytes, tuples, enums, dataclasses, pydantic models (LangChain
    messages among them) and pandas/numpy values have their own exact forms. Types
    differ too (``1``, ``1.0``, ``True`` and ``"1"`` are four fingerprints). Other
    objects hash by their attributes (default ``repr``) or by their ``repr`` with
    memory addresses removed.

    Example:
        >>> fingerprint_value({2, 1}) == fingerprint_value({1, 2})
        True
    """
    try:
        data = _str(value) if type(value) is str else _canon(value, 0)
    except Exception as exc:  # a hostile __eq__/__iter__/__getattr__: one fingerprint per type
        logger.warning(
            "a %s value cannot be fingerprinted (%s); it is compared by type only",
            type(value).__name__, exc,
        )  # fmt: skip
        data = b"?" + _text(_type_path(value))
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _text(text: str) -> bytes:
    """Length-prefixed, so no encoding is a prefix of another (safe to concatenate)."""
    raw = text.encode("utf-8", "surrogatepass")
    return b"%d:%s" % (len(raw), raw)


def _str(text: str) -> bytes:
    return b"s" + _text(text)


def _type_path(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _float(value: float) -> bytes:
    return b"f;nan" if math.isnan(value) else b"f" + _text(float.__repr__(value))


def _sequence(tag: bytes, values: Any, depth: int) -> bytes:
    parts = [_canon(v, depth + 1) for v in values]
    return b"%s%d[%s]" % (tag, len(parts), b"".join(parts))


def _unordered(tag: bytes, parts: list[bytes]) -> bytes:
    parts.sort()
    return b"%s%d{%s}" % (tag, len(parts), b"".join(parts))


def _mapping(items: Any, depth: int) -> bytes:
    return _unordered(b"d", [_canon(k, depth + 1) + _canon(v, depth + 1) for k, v in items])


def _canon(value: Any, depth: int) -> bytes:
    if depth > _MAX_DEPTH:
        return b"~"  # a cycle or absurd nesting: deep enough to tell inputs apart
    cls = type(value)
    if value is None:
        return b"N"
    if cls is str:
        return _str(value)
    if cls is bool:
        return b"T" if value else b"F"
    if cls is int:
        return b"i%d;" % value
    if cls is float:
        return _float(value)
    if cls is list:
        return _sequence(b"l", value, depth)
    if cls is tuple:
        return _sequence(b"t", value, depth)
    if cls is dict:
        return _mapping(value.items(), depth)
    if cls.__module__.partition(".")[0] in ("pandas", "numpy"):
        special = _canon_array_lib(value, depth)
        if special is not None:
            return special
    return _canon_object(value, depth)


def _canon_object(value: Any, depth: int) -> bytes:
    if isinstance(value, enum.Enum):
        return b"e" + _text(_type_path(value)) + _canon(value.value, depth + 1)
    if isinstance(value, int):
        return b"i%d;" % value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _str(str.__str__(value))
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return b"b%d:%s" % (len(raw), raw)
    if isinstance(value, set | frozenset):
        return _unordered(b"S", [_canon(v, depth + 1) for v in value])
    if isinstance(value, datetime.datetime):
        return b"D" + _text(value.isoformat())
    if isinstance(value, datetime.date):
        return b"a" + _text(value.isoformat())
    if isinstance(value, datetime.time):
        return b"h" + _text(value.isoformat())
    if isinstance(value, datetime.timedelta):
        return b"r%d,%d,%d;" % (value.days, value.seconds, value.microseconds)
    if isinstance(value, decimal.Decimal):
        return b"m" + _text(str(value))
    if isinstance(value, uuid.UUID):
        return b"u" + _text(value.hex)
    if isinstance(value, complex):
        return b"c" + _float(value.real) + _float(value.imag)
    if isinstance(value, PurePath):
        return b"p" + _text(_type_path(value)) + _text(str(value))
    if isinstance(value, BaseModel):  # LangChain messages and documents are pydantic too
        return b"M" + _text(_type_path(value)) + _mapping(value.model_dump().items(), depth)
    if isinstance(value, Mapping):
        return _mapping(value.items(), depth)
    if isinstance(value, list):
        return _sequence(b"l", value, depth)
    if isinstance(value, tuple):
        return _sequence(b"t", value, depth)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
        return b"C" + _text(_type_path(value)) + _mapping(fields, depth)
    attributes = getattr(value, "__dict__", None)
    if type(value).__repr__ is _DEFAULT_REPR and isinstance(attributes, dict):
        return b"o" + _text(_type_path(value)) + _mapping(attributes.items(), depth)
    return b"R" + _text(_type_path(value)) + _text(_ADDRESS.sub("", safe_repr(value)))


def _canon_array_lib(value: Any, depth: int) -> bytes | None:
    """pandas rows and frames, numpy arrays and scalars (imported only when one is seen)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        shape = list(value.shape)
        return (
            b"A"
            + _text(value.dtype.str)
            + _canon(shape, depth + 1)
            + _canon(value.tolist(), depth + 1)
        )
    if isinstance(value, np.generic):
        return _canon(value.item(), depth + 1)
    if type(value).__module__.partition(".")[0] != "pandas":
        return None
    import pandas as pd

    if value is pd.NA:
        return b"<NA>"
    if value is pd.NaT:
        return b"<NaT>"
    if isinstance(value, pd.Series):
        return (
            b"P"
            + _canon(value.name, depth + 1)
            + _canon(value.index.tolist(), depth + 1)
            + _canon(value.tolist(), depth + 1)
        )
    if isinstance(value, pd.DataFrame):
        return (
            b"F"
            + _canon(value.columns.tolist(), depth + 1)
            + _canon(value.index.tolist(), depth + 1)
            + _canon(value.to_numpy(dtype=object).tolist(), depth + 1)
        )
    if isinstance(value, pd.Index):
        return b"I" + _canon(value.tolist(), depth + 1)
    return None
