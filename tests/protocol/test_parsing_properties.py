"""Property tests: parse_frame never fails with anything but ProtocolError.

Whatever a client sends (bytes, text, any JSON value, envelopes with random keys),
parse_frame returns a ClientRequest or Ping, or raises ProtocolError; every reply built
from its outcome encodes with codec.dumps.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec, frames
from protocol.errors import ErrorCode, ProtocolError
from protocol.parsing import ClientRequest, Ping, parse_frame

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,  # keep the working tree clean
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ACTION_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

# Text that may contain lone surrogates (invalid in UTF-8).
any_text = st.one_of(
    st.text(),
    st.text(st.characters(codec=None, categories=["Cs"]), min_size=1, max_size=3),
    st.builds(
        lambda a, s, b: a + s + b,
        st.text(max_size=10),
        st.text(st.characters(codec=None, categories=["Cs"]), min_size=1, max_size=2),
        st.text(max_size=10),
    ),
)

# Values the client's JSON encoder could produce.
clean_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
# Plus what a sloppy encoder writes: NaN/Infinity, lone surrogates.
messy_scalars = st.one_of(clean_scalars, st.floats(allow_nan=True), any_text)


def _json_tree(leaves: st.SearchStrategy[Any], keys: st.SearchStrategy[str]) -> Any:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(keys, children, max_size=5),
        ),
        max_leaves=30,
    )


clean_values = _json_tree(clean_scalars, st.text())
json_values = _json_tree(messy_scalars, any_text)

envelope_keys: dict[str, st.SearchStrategy[Any]] = {
    "type": st.one_of(st.sampled_from(["request", "ping", "Request", "pong", ""]), clean_values),
    "id": st.one_of(st.text(min_size=0, max_size=140), clean_values),
    "action": st.one_of(
        st.from_regex(ACTION_RE, fullmatch=True),
        st.sampled_from(["echo", "request.status", "generate_report", "", "a b", "é"]),
        clean_values,
    ),
    "payload": st.one_of(st.dictionaries(st.text(), clean_values, max_size=5), clean_values),
    "metadata": st.one_of(
        st.dictionaries(st.text(), clean_values, max_size=5),
        st.builds(lambda n: {"blob": "x" * n}, st.integers(4000, 4200)),
        clean_values,
    ),
}

random_envelopes = st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries({}, optional=envelope_keys),
    st.dictionaries(st.text(), clean_values, max_size=3),
)
# Mostly well-formed requests, so that the success path is exercised as much.
likely_valid_envelopes = st.fixed_dictionaries(
    {"action": st.from_regex(ACTION_RE, fullmatch=True)},
    optional={
        "type": st.just("request"),
        "id": st.text(min_size=1, max_size=128),
        "payload": st.dictionaries(st.text(), clean_values, max_size=5),
        "metadata": st.dictionaries(st.text(), clean_values, max_size=5),
    },
)
envelopes = st.one_of(random_envelopes, likely_valid_envelopes)


def _encode(value: Any, ensure_ascii: bool) -> str:
    # The stdlib encoder writes what orjson cannot (big ints, NaN, lone surrogates), so
    # the parser also meets JSON-ish text that is not valid JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii)


json_texts = st.builds(_encode, st.one_of(envelopes, clean_values, json_values), st.booleans())


# Deeply nested frames, up to past orjson's decode limit (1024).
def _nested_text(key: str, depth: int, use_objects: bool) -> str:
    if use_objects:
        inner = '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)
    else:
        inner = "[" * depth + "]" * depth
    return f'{{"action":"echo","{key}":{inner}}}'


deep_texts = st.builds(
    _nested_text,
    st.sampled_from(["payload", "metadata", "other"]),
    st.integers(1, 1100),
    st.booleans(),
)

frame_inputs = st.one_of(
    st.binary(max_size=300),
    any_text,
    json_texts,
    json_texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
    deep_texts,
)


def _check(data: Any, **kwargs: Any) -> None:
    try:
        result = parse_frame(data, **kwargs)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.INVALID_MESSAGE, ErrorCode.VALIDATION_ERROR)
        assert exc.details is not None
        if exc.code is ErrorCode.INVALID_MESSAGE:
            assert exc.request_id is None
            assert exc.details["reason"] in {"binary", "too_large", "not_json", "not_object"}
        else:
            assert isinstance(exc.request_id, str)
            assert 0 < len(exc.request_id) <= 128
            errors = exc.details["errors"]
            assert errors
            fields = [e["field"] for e in errors]
            assert len(fields) == len(set(fields))
            assert set(fields) <= {"type", "id", "action", "payload", "metadata"}
        frame = frames.error_from(exc.request_id, exc)
        encoded = codec.dumps(frame)
        assert codec.loads(encoded)["error"]["code"] == exc.code.value
        return
    if isinstance(result, Ping):
        codec.dumps(frames.pong())
        return
    assert isinstance(result, ClientRequest)
    assert isinstance(result.id, str)
    assert 0 < len(result.id) <= 128
    assert ACTION_RE.fullmatch(result.action)
    assert type(result.payload) is dict
    assert result.metadata is None or type(result.metadata) is dict
    if result.metadata is not None:
        assert len(codec.dumps(result.metadata)) <= 4096
    # Every reply that embeds the client's values must encode.
    codec.dumps(frames.response(result.id, {"echo": result.payload}, metadata=result.metadata))
    codec.dumps(frames.complete(result.id, {"payload": result.payload}, metadata=result.metadata))


@SETTINGS
@given(st.binary(max_size=500))
def test_arbitrary_bytes(data: bytes) -> None:
    _check(data)


@SETTINGS
@given(any_text)
def test_arbitrary_text(data: str) -> None:
    _check(data)


@SETTINGS
@given(json_texts, st.booleans())
def test_arbitrary_json(text: str, as_bytes: bool) -> None:
    _check(text.encode("utf-8", "surrogatepass") if as_bytes else text)


@SETTINGS
@given(envelopes)
def test_arbitrary_envelopes(envelope: dict[str, Any]) -> None:
    _check(_encode(envelope, ensure_ascii=False))


@SETTINGS
@given(deep_texts, st.booleans())
def test_deep_nesting(text: str, as_bytes: bool) -> None:
    _check(text.encode() if as_bytes else text)


@SETTINGS
@given(
    frame_inputs,
    st.booleans(),
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=1, max_value=80),
)
def test_any_input_any_limits(
    data: Any, binary: bool, max_bytes: int, max_metadata_bytes: int, max_depth: int
) -> None:
    _check(
        data,
        binary=binary,
        max_bytes=max_bytes,
        max_metadata_bytes=max_metadata_bytes,
        max_depth=max_depth,
    )
