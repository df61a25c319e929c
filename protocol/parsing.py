"""Parsing and validation of client → server frames (docs/protocol.md §2.1).

This is on the hot path of every frame, so the checks are hand-written (no pydantic).
Every failure raises :class:`~protocol.errors.ProtocolError`:

* ``INVALID_MESSAGE`` when the frame cannot be parsed at all (binary, too large, not
  JSON, not a JSON object); ``details.reason`` says which, and ``request_id`` is ``None``.
* ``VALIDATION_ERROR`` when the envelope is wrong; ``details.errors`` lists every failing
  field at once. ``request_id`` is the client's ``id`` when that was valid, otherwise a
  freshly generated UUID4 (the frame was parsed, so the error frame never says null).

Choices where docs/protocol.md is silent:

* an explicit JSON ``null`` for ``type``, ``id``, ``payload`` or ``metadata`` counts as
  absent (``action: null`` is "required");
* ``payload`` and ``metadata`` may nest at most ``max_depth`` (64) arrays/objects deep,
  so that every reply that embeds them can still be encoded;
* a ``ping`` ignores every other key.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from protocol.errors import ErrorCode, FieldError, ProtocolError, validation_error

MAX_FRAME_BYTES = 128 * 1024
MAX_METADATA_BYTES = 4 * 1024
MAX_DEPTH = 64
MAX_ID_LENGTH = 128
MAX_ACTION_LENGTH = 64

_ACTION_RE = re.compile(r"[A-Za-z0-9._-]{1,%d}" % MAX_ACTION_LENGTH)  # noqa: UP031

MSG_BINARY = "Binary frames are not supported"
MSG_TOO_LARGE = "Message too large"
MSG_NOT_JSON = "Message is not valid JSON"
MSG_NOT_OBJECT = "Message must be a JSON object"
MSG_INVALID_REQUEST = "Invalid request"

FIELD_TYPE = 'must be "request" or "ping"'
FIELD_ID = f"must be a string of 1-{MAX_ID_LENGTH} characters"
FIELD_ACTION_REQUIRED = "is required"
FIELD_ACTION = f"must be 1-{MAX_ACTION_LENGTH} characters of A-Z a-z 0-9 . _ -"
FIELD_OBJECT = "must be an object"


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A valid ``request`` frame."""

    id: str
    action: str
    payload: dict[str, Any]
    metadata: dict[str, Any] | None
    id_generated: bool


@dataclass(frozen=True, slots=True)
class Ping:
    """A ``ping`` frame."""


PING = Ping()


def _invalid(reason: str, message: str, **extra: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_MESSAGE, message, {"reason": reason, **extra})


def _nests_deeper_than(value: Any, limit: int) -> bool:
    """True when ``value`` has more than ``limit`` levels of arrays/objects (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))
    return False


def _new_id() -> str:
    return str(uuid.uuid4())


def parse_frame(
    data: str | bytes | None,
    *,
    binary: bool = False,
    max_bytes: int = MAX_FRAME_BYTES,
    max_metadata_bytes: int = MAX_METADATA_BYTES,
    max_depth: int = MAX_DEPTH,
) -> ClientRequest | Ping:
    """Parse and validate one client frame; raises :class:`ProtocolError` when it is bad.

    ``binary`` tells that the frame arrived as a WebSocket binary frame. ``max_bytes`` is
    checked on the UTF-8 length of the raw frame, before decoding.
    """
    if binary:
        raise _invalid("binary", MSG_BINARY)

    # Size first, on the raw UTF-8 length, without encoding when the bounds decide.
    if isinstance(data, str):
        size = len(data)
        if max_bytes < size * 4 and size <= max_bytes:
            size = len(data.encode("utf-8", "surrogatepass"))
    elif isinstance(data, bytes | bytearray):
        size = len(data)
    else:
        raise _invalid("not_json", MSG_NOT_JSON)
    if size > max_bytes:
        raise _invalid("too_large", MSG_TOO_LARGE, max_bytes=max_bytes)

    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _invalid("not_json", MSG_NOT_JSON) from None
    if type(obj) is not dict:
        raise _invalid("not_object", MSG_NOT_OBJECT)

    errors: list[FieldError] = []

    kind = obj.get("type")
    if kind is not None and kind != "request":
        if kind == "ping":
            return PING
        errors.append({"field": "type", "message": FIELD_TYPE})

    raw_id = obj.get("id")
    request_id = ""  # stays empty when the client's id is invalid
    id_generated = False
    if raw_id is None:
        request_id = _new_id()
        id_generated = True
    elif type(raw_id) is str and 0 < len(raw_id) <= MAX_ID_LENGTH:
        request_id = raw_id
    else:
        errors.append({"field": "id", "message": FIELD_ID})

    action = obj.get("action")
    if action is None:
        errors.append({"field": "action", "message": FIELD_ACTION_REQUIRED})
    elif type(action) is not str or _ACTION_RE.fullmatch(action) is None:
        errors.append({"field": "action", "message": FIELD_ACTION})
        action = None

    # Only look for deep nesting when the raw frame has enough brackets to allow it.
    if isinstance(data, str):
        brackets = data.count("{") + data.count("[")
    else:
        brackets = data.count(b"{") + data.count(b"[")
    maybe_deep = brackets > max_depth + 1
    too_deep = f"must not nest more than {max_depth} levels"

    payload = obj.get("payload")
    if payload is None:
        payload = {}
    elif type(payload) is not dict:
        errors.append({"field": "payload", "message": FIELD_OBJECT})
    elif maybe_deep and _nests_deeper_than(payload, max_depth):
        errors.append({"field": "payload", "message": too_deep})

    metadata = obj.get("metadata")
    if metadata is not None:
        if type(metadata) is not dict:
            errors.append({"field": "metadata", "message": FIELD_OBJECT})
        elif maybe_deep and _nests_deeper_than(metadata, max_depth):
            errors.append({"field": "metadata", "message": too_deep})
        elif len(orjson.dumps(metadata)) > max_metadata_bytes:
            errors.append(
                {
                    "field": "metadata",
                    "message": f"must be at most {max_metadata_bytes} bytes once encoded",
                }
            )

    if errors or action is None:
        raise validation_error(
            errors, message=MSG_INVALID_REQUEST, request_id=request_id or _new_id()
        )
    return ClientRequest(
        id=request_id,
        action=action,
        payload=payload,
        metadata=metadata,
        id_generated=id_generated,
    )
