"""Values to JSON and back, for checkpoints and exports, without pickle.

Plain JSON values stay themselves; LangChain objects (messages, documents, prompt
values) go through langchain-core's own serialisation (``dumpd``/``load``);
pydantic models store their class path and JSON data; bytes are base64. A value
none of these can express is stored as its ``repr`` (and loads as that string),
with a warning: the item's record is never lost for want of a format. A ``repr``
that raises leaves a placeholder naming the type. Text that
UTF-8 cannot encode (lone surrogates: a file name ``os.listdir`` decoded with
``surrogateescape``) is stored with JSON ``\\u`` escapes, so it still round-trips
exactly.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import math
import warnings
from typing import Any

from langchain_core.load import dumpd, load
from langchain_core.load.serializable import Serializable
from pydantic import BaseModel

from langchain_batchkit._errors import redact_secrets

__all__ = ["dumps_value", "json_text", "loads_value", "safe_repr", "to_jsonable"]

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
    if isinstance(value, bytes | bytearray):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return {"list": [_encode(v) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    return None


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
