"""protocol.codec: orjson encode/decode."""

from __future__ import annotations

import enum

import pytest

from protocol import codec
from protocol.errors import ErrorCode


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"a": 1}, b'{"a":1}'),
        ({1: "x", None: 2}, b'{"1":"x","null":2}'),
        ([1.5, True, None, "é"], '[1.5,true,null,"é"]'.encode()),
        ({"code": ErrorCode.TIMEOUT}, b'{"code":"TIMEOUT"}'),
        ("", b'""'),
    ],
)
def test_dumps_and_dumps_text(obj, expected: bytes) -> None:
    assert codec.dumps(obj) == expected
    text = codec.dumps_text(obj)
    assert isinstance(text, str)
    assert text == expected.decode()


@pytest.mark.parametrize("obj", [{"x": object()}, {"x": {1, 2}}, [2**70]])
def test_dumps_rejects_unencodable(obj) -> None:
    with pytest.raises(codec.EncodeError):
        codec.dumps(obj)
    with pytest.raises(TypeError):
        codec.dumps_text(obj)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        (b'{"a": null}', {"a": None}),
        ("[]", []),
        ("3", 3),
        ('"s"', "s"),
        (b'"\\u00e9"', "é"),
    ],
)
def test_loads(data, expected) -> None:
    assert codec.loads(data) == expected


@pytest.mark.parametrize(
    "data",
    ["", "{", "{'a': 1}", "NaN", "1e400", b"\xff\xfe", "\ud800", '"\\ud800"', "[1,]"],
)
def test_loads_rejects_bad_json_with_value_error(data) -> None:
    with pytest.raises(codec.DecodeError) as info:
        codec.loads(data)
    assert isinstance(info.value, ValueError)


def test_roundtrip_enum_values() -> None:
    class Color(enum.Enum):
        RED = "red"

    assert codec.loads(codec.dumps({"c": Color.RED})) == {"c": "red"}
