"""JSON encoding and decoding of frames (orjson)."""

from __future__ import annotations

from typing import Any

import orjson

#: Raised by :func:`loads` on malformed JSON or invalid UTF-8 (a ``ValueError`` subclass).
DecodeError = orjson.JSONDecodeError
#: Raised by :func:`dumps` for values JSON cannot represent (a ``TypeError`` subclass).
EncodeError = orjson.JSONEncodeError

_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as compact UTF-8 JSON; non-string dict keys are stringified."""
    return orjson.dumps(obj, option=_DUMPS_OPTIONS)


def dumps_text(obj: Any) -> str:
    """Like :func:`dumps`, as ``str`` (for WebSocket text frames)."""
    return orjson.dumps(obj, option=_DUMPS_OPTIONS).decode("utf-8")


def loads(data: str | bytes) -> Any:
    """Decode JSON text; raises :data:`DecodeError` (a ``ValueError``) when it is not JSON."""
    return orjson.loads(data)
