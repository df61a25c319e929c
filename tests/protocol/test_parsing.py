"""protocol.parsing.parse_frame: client → server frames (docs/protocol.md §2.1)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from protocol import codec
from protocol.errors import ErrorCode, ProtocolError
from protocol.parsing import (
    MAX_FRAME_BYTES,
    PING,
    ClientRequest,
    Ping,
    parse_frame,
)


class RawJSON(str):
    """JSON text embedded verbatim by :func:`_frame` (for values orjson cannot encode)."""


def _deep(depth: int) -> RawJSON:
    """An object nested ``depth`` levels deep, as JSON text (deeper than orjson encodes)."""
    return RawJSON('{"k":' * (depth - 1) + "{}" + "}" * (depth - 1))


def _frame(obj: dict[str, Any]) -> str:
    if not any(isinstance(v, RawJSON) for v in obj.values()):
        return codec.dumps_text(obj)
    items = (
        f"{codec.dumps_text(k)}:{v if isinstance(v, RawJSON) else codec.dumps_text(v)}"
        for k, v in obj.items()
    )
    return "{" + ",".join(items) + "}"


def _field_errors(exc: ProtocolError) -> list[tuple[str, str]]:
    assert exc.details is not None
    return [(e["field"], e["message"]) for e in exc.details["errors"]]


def _is_uuid4(value: str) -> bool:
    return uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value


def _nested(depth: int) -> dict[str, Any]:
    """An object with ``depth`` levels of objects/arrays (itself included)."""
    value: Any = {}
    for i in range(depth - 1):
        value = {"k": value} if (depth - 2 - i) % 2 == 0 else [value]
    assert isinstance(value, dict)
    return value


# --------------------------------------------------------------------------- success


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            {"action": "echo"},
            {"action": "echo", "payload": {}, "metadata": None},
        ),
        (
            {"type": "request", "id": "r-1", "action": "echo", "payload": {"a": [1, 2]}},
            {"id": "r-1", "action": "echo", "payload": {"a": [1, 2]}, "metadata": None},
        ),
        (
            {"id": "x" * 128, "action": "a" * 64, "metadata": {"trace": "t1", "n": 2}},
            {
                "id": "x" * 128,
                "action": "a" * 64,
                "payload": {},
                "metadata": {"trace": "t1", "n": 2},
            },
        ),
        (
            {"id": "é", "action": "request.status", "payload": {"request_id": "r"}, "extra": 1},
            {
                "id": "é",
                "action": "request.status",
                "payload": {"request_id": "r"},
                "metadata": None,
            },
        ),
        (
            {"type": None, "id": None, "action": "A.b_c-9", "payload": None, "metadata": None},
            {"action": "A.b_c-9", "payload": {}, "metadata": None},
        ),
        (
            {"action": "echo", "metadata": {}},
            {"action": "echo", "payload": {}, "metadata": {}},
        ),
        (
            {"action": "echo", "Type": "bogus", "ID": 5, "Action": 1},
            {"action": "echo", "payload": {}, "metadata": None},
        ),
    ],
    ids=[
        "type-omitted-id-generated",
        "full",
        "limits-and-metadata-echo",
        "unicode-id-unknown-keys",
        "nulls-count-as-absent",
        "empty-metadata",
        "keys-case-sensitive",
    ],
)
def test_parse_request(obj: dict[str, Any], expected: dict[str, Any], as_bytes: bool) -> None:
    raw = _frame(obj)
    result = parse_frame(raw.encode() if as_bytes else raw)
    assert isinstance(result, ClientRequest)
    assert result.action == expected["action"]
    assert result.payload == expected["payload"]
    assert result.metadata == expected["metadata"]
    if "id" in expected:
        assert result.id == expected["id"]
        assert result.id_generated is False
    else:
        assert _is_uuid4(result.id)
        assert result.id_generated is True


def test_generated_ids_are_unique() -> None:
    ids = {parse_frame('{"action": "echo"}').id for _ in range(50)}  # type: ignore[union-attr]
    assert len(ids) == 50


def test_default_payload_is_a_fresh_dict() -> None:
    first = parse_frame('{"action": "echo"}')
    second = parse_frame('{"action": "echo"}')
    assert isinstance(first, ClientRequest)
    assert isinstance(second, ClientRequest)
    assert first.payload == {}
    assert first.payload is not second.payload


def test_client_request_is_frozen() -> None:
    result = parse_frame('{"id": "a", "action": "echo"}')
    with pytest.raises(AttributeError):
        result.id = "b"  # type: ignore[misc,union-attr]


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "ping"}',
        b'{"type":"ping"}',
        '{"type": "ping", "id": 5, "action": "!!", "payload": [], "metadata": 1}',
        ' \n{"type": "ping"}\t',
    ],
)
def test_parse_ping(raw: str | bytes) -> None:
    result = parse_frame(raw)
    assert isinstance(result, Ping)
    assert result == Ping()
    assert result is PING


def test_metadata_at_the_limit_is_accepted() -> None:
    # {"k":"xxx…"} encodes to 8 + len bytes.
    metadata = {"k": "x" * (4096 - 8)}
    assert len(codec.dumps(metadata)) == 4096
    result = parse_frame(_frame({"action": "echo", "metadata": metadata}))
    assert isinstance(result, ClientRequest)
    assert result.metadata == metadata


@pytest.mark.parametrize("depth", [1, 2, 63, 64])
def test_nesting_up_to_the_limit_is_accepted(depth: int) -> None:
    value = _nested(depth)
    result = parse_frame(_frame({"action": "echo", "payload": value, "metadata": value}))
    assert isinstance(result, ClientRequest)
    assert result.payload == value


def test_many_brackets_but_shallow_is_accepted() -> None:
    payload = {"items": [[{}] for _ in range(500)], "text": "{[" * 100}
    result = parse_frame(_frame({"action": "echo", "payload": payload}))
    assert isinstance(result, ClientRequest)
    assert result.payload == payload


def test_frame_exactly_max_bytes_is_accepted() -> None:
    head = '{"action":"echo","payload":{"s":"'
    tail = '"}}'
    raw = head + "a" * (MAX_FRAME_BYTES - len(head) - len(tail)) + tail
    assert len(raw.encode()) == MAX_FRAME_BYTES
    assert isinstance(parse_frame(raw), ClientRequest)
    assert isinstance(parse_frame(raw.encode()), ClientRequest)


def test_multibyte_text_is_measured_in_utf8_bytes() -> None:
    head = '{"action":"echo","payload":{"s":"'
    tail = '"}}'
    # 3 bytes per character: fits in characters, not in bytes.
    body = "€" * ((MAX_FRAME_BYTES - len(head) - len(tail)) // 3 + 1)
    raw = head + body + tail
    assert len(raw) <= MAX_FRAME_BYTES < len(raw.encode())
    with pytest.raises(ProtocolError) as info:
        parse_frame(raw)
    assert info.value.details == {"reason": "too_large", "max_bytes": MAX_FRAME_BYTES}
    # The same number of characters, one byte each, fits.
    assert isinstance(parse_frame(head + "e" * len(body) + tail), ClientRequest)


# ------------------------------------------------------------------ INVALID_MESSAGE


BIG = '{"action":"echo","payload":{"s":"' + "a" * MAX_FRAME_BYTES + '"}}'


@pytest.mark.parametrize(
    ("data", "kwargs", "reason", "extra"),
    [
        ('{"action": "echo"}', {"binary": True}, "binary", {}),
        (b'{"action": "echo"}', {"binary": True}, "binary", {}),
        (None, {"binary": True}, "binary", {}),
        (None, {}, "not_json", {}),
        (12, {}, "not_json", {}),
        (BIG, {}, "too_large", {"max_bytes": MAX_FRAME_BYTES}),
        (BIG.encode(), {}, "too_large", {"max_bytes": MAX_FRAME_BYTES}),
        ("x" * 11, {"max_bytes": 10}, "too_large", {"max_bytes": 10}),
        ('{"action":"ab"}', {"max_bytes": 10}, "too_large", {"max_bytes": 10}),
        ("éé" * 3, {"max_bytes": 10}, "too_large", {"max_bytes": 10}),
        ("", {}, "not_json", {}),
        ("   ", {}, "not_json", {}),
        ("not json", {}, "not_json", {}),
        ('{"action": "echo"', {}, "not_json", {}),
        ("{'action': 'echo'}", {}, "not_json", {}),
        ('{"action": "echo"} {}', {}, "not_json", {}),
        ('{"a": NaN}', {}, "not_json", {}),
        (b"\xff\xfe\xfd", {}, "not_json", {}),
        (b'{"action": "\xc3\x28"}', {}, "not_json", {}),
        ('{"action": "\ud800"}', {}, "not_json", {}),
        ("[]", {}, "not_object", {}),
        ('[{"action": "echo"}]', {}, "not_object", {}),
        ("42", {}, "not_object", {}),
        ("-1.5e3", {}, "not_object", {}),
        ('"a string"', {}, "not_object", {}),
        ("null", {}, "not_object", {}),
        ("true", {}, "not_object", {}),
        (bytearray(b"[1]"), {}, "not_object", {}),
    ],
)
def test_invalid_message(data: Any, kwargs: dict[str, Any], reason: str, extra: dict) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_frame(data, **kwargs)
    exc = info.value
    assert exc.code is ErrorCode.INVALID_MESSAGE
    assert exc.details == {"reason": reason, **extra}
    assert exc.request_id is None
    assert exc.retryable is False
    # Short client-facing text, no library exception text.
    assert exc.message and len(exc.message) <= 60
    for leak in ("orjson", "line ", "column", "char ", "Error", "utf-8"):
        assert leak not in exc.message


def test_bytearray_request_is_accepted() -> None:
    assert isinstance(parse_frame(bytearray(b'{"action":"echo"}')), ClientRequest)


# ----------------------------------------------------------------- VALIDATION_ERROR

TYPE_MSG = 'must be "request" or "ping"'
ID_MSG = "must be a string of 1-128 characters"
ACTION_REQUIRED = "is required"
ACTION_MSG = "must be 1-64 characters of A-Z a-z 0-9 . _ -"
OBJECT_MSG = "must be an object"
METADATA_SIZE_MSG = "must be at most 4096 bytes once encoded"
DEPTH_MSG = "must not nest more than 64 levels"


@pytest.mark.parametrize(
    ("obj", "field", "message"),
    [
        # type
        ({"type": "pong", "id": "r", "action": "echo"}, "type", TYPE_MSG),
        ({"type": "Request", "id": "r", "action": "echo"}, "type", TYPE_MSG),
        ({"type": "PING", "id": "r", "action": "echo"}, "type", TYPE_MSG),
        ({"type": "", "id": "r", "action": "echo"}, "type", TYPE_MSG),
        ({"type": 1, "id": "r", "action": "echo"}, "type", TYPE_MSG),
        ({"type": ["ping"], "id": "r", "action": "echo"}, "type", TYPE_MSG),
        ({"type": True, "id": "r", "action": "echo"}, "type", TYPE_MSG),
        # id
        ({"id": "", "action": "echo"}, "id", ID_MSG),
        ({"id": "x" * 129, "action": "echo"}, "id", ID_MSG),
        ({"id": 7, "action": "echo"}, "id", ID_MSG),
        ({"id": 1.5, "action": "echo"}, "id", ID_MSG),
        ({"id": False, "action": "echo"}, "id", ID_MSG),
        ({"id": ["r"], "action": "echo"}, "id", ID_MSG),
        ({"id": {"v": "r"}, "action": "echo"}, "id", ID_MSG),
        # action
        ({"id": "r"}, "action", ACTION_REQUIRED),
        ({"id": "r", "action": None}, "action", ACTION_REQUIRED),
        ({"id": "r", "action": ""}, "action", ACTION_MSG),
        ({"id": "r", "action": "a" * 65}, "action", ACTION_MSG),
        ({"id": "r", "action": "has space"}, "action", ACTION_MSG),
        ({"id": "r", "action": "echo\n"}, "action", ACTION_MSG),
        ({"id": "r", "action": "ech\u043e"}, "action", ACTION_MSG),
        ({"id": "r", "action": "a/b"}, "action", ACTION_MSG),
        ({"id": "r", "action": "٣"}, "action", ACTION_MSG),
        ({"id": "r", "action": 5}, "action", ACTION_MSG),
        ({"id": "r", "action": ["echo"]}, "action", ACTION_MSG),
        ({"id": "r", "action": True}, "action", ACTION_MSG),
        # payload
        ({"id": "r", "action": "echo", "payload": []}, "payload", OBJECT_MSG),
        ({"id": "r", "action": "echo", "payload": "x"}, "payload", OBJECT_MSG),
        ({"id": "r", "action": "echo", "payload": 0}, "payload", OBJECT_MSG),
        ({"id": "r", "action": "echo", "payload": False}, "payload", OBJECT_MSG),
        ({"id": "r", "action": "echo", "payload": _nested(65)}, "payload", DEPTH_MSG),
        ({"id": "r", "action": "echo", "payload": _deep(300)}, "payload", DEPTH_MSG),
        ({"id": "r", "action": "echo", "payload": _deep(1000)}, "payload", DEPTH_MSG),
        # metadata
        ({"id": "r", "action": "echo", "metadata": []}, "metadata", OBJECT_MSG),
        ({"id": "r", "action": "echo", "metadata": "m"}, "metadata", OBJECT_MSG),
        ({"id": "r", "action": "echo", "metadata": 3}, "metadata", OBJECT_MSG),
        (
            {"id": "r", "action": "echo", "metadata": {"k": "x" * (4096 - 7)}},
            "metadata",
            METADATA_SIZE_MSG,
        ),
        (
            {"id": "r", "action": "echo", "metadata": {"k": "€" * 1400}},
            "metadata",
            METADATA_SIZE_MSG,
        ),
        ({"id": "r", "action": "echo", "metadata": _nested(65)}, "metadata", DEPTH_MSG),
        ({"id": "r", "action": "echo", "metadata": _deep(400)}, "metadata", DEPTH_MSG),
    ],
)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
def test_single_validation_failure(
    obj: dict[str, Any], field: str, message: str, as_bytes: bool
) -> None:
    raw = _frame(obj)
    with pytest.raises(ProtocolError) as info:
        parse_frame(raw.encode() if as_bytes else raw)
    exc = info.value
    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert exc.retryable is False
    assert exc.message == "Invalid request"
    assert _field_errors(exc) == [(field, message)]
    if field == "id" or "id" not in obj:
        assert exc.request_id is not None
        assert _is_uuid4(exc.request_id)
    else:
        assert exc.request_id == obj["id"]


@pytest.mark.parametrize(
    ("obj", "fields", "request_id"),
    [
        ({}, ["action"], None),
        (
            {"type": "x", "id": "", "payload": [], "metadata": []},
            ["type", "id", "action", "payload", "metadata"],
            None,
        ),
        (
            {"type": 0, "id": "keep-me", "action": "bad action", "payload": 1},
            ["type", "action", "payload"],
            "keep-me",
        ),
        (
            {"id": 5, "action": "", "metadata": {"k": "x" * 5000}},
            ["id", "action", "metadata"],
            None,
        ),
        (
            {"action": "!", "payload": _nested(70), "metadata": _nested(70)},
            ["action", "payload", "metadata"],
            None,
        ),
    ],
)
def test_every_failure_is_reported_at_once(
    obj: dict[str, Any], fields: list[str], request_id: str | None
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_frame(_frame(obj))
    exc = info.value
    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert [field for field, _ in _field_errors(exc)] == fields
    assert exc.request_id is not None
    if request_id is None:
        assert _is_uuid4(exc.request_id)
    else:
        assert exc.request_id == request_id


@pytest.mark.parametrize(
    ("kwargs", "obj", "ok"),
    [
        ({"max_metadata_bytes": 12}, {"action": "e", "metadata": {"k": "1234"}}, True),
        ({"max_metadata_bytes": 12}, {"action": "e", "metadata": {"k": "12345"}}, False),
        ({"max_depth": 2}, {"action": "e", "payload": {"a": {}}}, True),
        ({"max_depth": 2}, {"action": "e", "payload": {"a": {"b": []}}}, False),
        ({"max_depth": 2}, {"action": "e", "payload": {"a": [1, 2, 3]}, "x": [[[[]]]]}, True),
    ],
)
def test_configurable_limits(kwargs: dict[str, int], obj: dict[str, Any], ok: bool) -> None:
    if ok:
        assert isinstance(parse_frame(_frame(obj), **kwargs), ClientRequest)
    else:
        with pytest.raises(ProtocolError) as info:
            parse_frame(_frame(obj), **kwargs)
        assert info.value.code is ErrorCode.VALIDATION_ERROR
