"""Hypothesis fuzzing of every registered action's payload validation, through the whole
pipeline (rate limit → parse → route → validate → run or enqueue) with storage in moto.

Whatever the payload, one frame answers: a ``response``, an ``acknowledgment`` or an
``error`` with a code of docs/protocol.md §4, never INTERNAL_ERROR (a bug), never library
text, always the client's request id; and another user's requests are never reached.
The frame parser itself is fuzzed in tests/protocol/test_parsing_properties.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer, channel_layers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

import streaming.actions  # noqa: F401 - registers the built-in actions
from connections.manager import manager
from connections.tenants import TenantPolicy
from protocol import codec
from protocol.errors import ErrorCode
from storage import base, tables
from storage.base import encode_cursor
from storage.requests.model import RequestKey, RequestStatus
from storage.requests.store import request_store
from streaming.actions.registry import registry
from streaming.auth import Identity
from streaming.pipeline import Pipeline
from streaming.ratelimit import TokenBucket
from streaming.session import Session
from tests.support.sockets import assert_no_leak

TENANT = "acme"
FUZZER = "fuzzer"
VICTIM = "victim"
VICTIM_IDS = [f"v-{i}" for i in range(3)]
OWN_IDS = [f"own-{i}" for i in range(3)]
ACTIONS = [name for name in registry.names() if not name.startswith("bench.")]
KNOWN_CODES = {code.value for code in ErrorCode} - {ErrorCode.INTERNAL_ERROR.value}

SETTINGS = settings(
    max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    database=None,  # keep the working tree clean
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# --- strategies -----------------------------------------------------------------------------

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Values chosen to sit on or across the edges of the built-in schemas.
edges = st.sampled_from(
    [
        "",
        "x" * 128,
        "x" * 129,
        "#",
        "%23",
        "../..",
        "\x00",
        "acme#victim#v-0",
        "victim#v-0",
        *VICTIM_IDS,
        *OWN_IDS,
        "PENDING",
        "pending",
        "COMPLETED",
        -1,
        0,
        1,
        100,
        101,
        600,
        601,
        10_000,
        10_001,
        1e308,
        -0.0,
        "1",
        "2.5",
        "true",
        True,
        False,
        [],
        {},
    ]
)
cursors = st.one_of(
    st.text(max_size=60),
    st.builds(
        encode_cursor,
        st.fixed_dictionaries(
            {
                "r": st.one_of(st.text(min_size=1, max_size=130), st.sampled_from(VICTIM_IDS)),
                "c": st.one_of(st.integers(min_value=-5, max_value=2**64 - 1), json_values),
            }
        ),
    ),
    st.builds(encode_cursor, st.dictionaries(st.text(max_size=3), json_values, min_size=1)),
)


# Well-formed values of the built-in schemas' fields, so that valid payloads (and
# valid-but-for-one-field ones) are common, not just junk.
VALID: dict[str, st.SearchStrategy[Any]] = {
    "request_id": st.one_of(
        st.sampled_from(OWN_IDS + VICTIM_IDS), st.text(min_size=1, max_size=128)
    ),
    "subscribe": st.booleans(),
    "status": st.sampled_from([s.value for s in RequestStatus]),
    "limit": st.integers(min_value=1, max_value=100),
    "cursor": cursors,
    "duration_s": st.one_of(st.floats(min_value=0, max_value=600), st.integers(0, 600)),
    "steps": st.integers(min_value=1, max_value=1000),
    "max_requests": st.integers(min_value=0, max_value=10_000),
    "include_connections": st.booleans(),
}


def payloads(action: str) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of the action's own fields (mostly well-formed, else edge or random values),
    sometimes missing required ones, sometimes with junk keys."""
    spec = registry.get(action)
    schema_fields = spec.schema.model_fields if spec.schema is not None else {}
    if not schema_fields:
        return st.dictionaries(st.text(max_size=12), json_values, max_size=6)

    def value(name: str) -> st.SearchStrategy[Any]:
        valid = VALID.get(name, edges)
        return st.one_of(valid, valid, valid, edges, json_values)

    required = [f for f, info in schema_fields.items() if info.is_required()]
    optional = [f for f in schema_fields if f not in required]
    complete = st.fixed_dictionaries(
        {f: value(f) for f in required}, optional={f: value(f) for f in optional}
    )
    partial = st.fixed_dictionaries({}, optional={f: value(f) for f in schema_fields})
    junk = st.dictionaries(st.text(max_size=12), json_values, max_size=2)
    return st.builds(
        lambda known, extra, add: {**(extra if add else {}), **known},
        st.one_of(complete, complete, complete, partial),
        junk,
        st.booleans(),
    )


ids = st.one_of(
    st.none(),
    st.text(min_size=1, max_size=128).filter(lambda s: not s.startswith(("v-", "own-"))),
)
metadata = st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_values, max_size=3))


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def storage() -> Iterator[base.StoreConfig]:
    previous = base.current_config()
    with mock_aws():
        config = base.StoreConfig(endpoint_url=None, region="us-east-1", table_prefix="fuzz")
        base.configure(config)
        tables.create_all()
        for user, request_ids in ((VICTIM, VICTIM_IDS), (FUZZER, OWN_IDS)):
            for request_id in request_ids:
                request_store.enqueue(
                    tenant_id=TENANT,
                    user_id=user,
                    request_id=request_id,
                    action="generate_report",
                    payload={},
                )
        yield config
    base.configure(previous)


@pytest.fixture
def session(storage: base.StoreConfig) -> Iterator[Session]:
    if base.current_config() != storage:
        base.configure(storage)
    layer = InMemoryChannelLayer(capacity=100_000, expiry=60)
    previous = channel_layers.set("default", layer)
    manager._subscribers.clear()
    channel = asyncio.run(layer.new_channel("socket."))
    yield Session(
        identity=Identity(TENANT, FUZZER, frozenset()),
        connection_id="fuzz-conn",
        transport="channels",
        address=channel,
        limiter=TokenBucket(10**9, 1),
        policy=TenantPolicy(TENANT, True, 0, 10**9, 1),
    )
    manager._subscribers.clear()
    if previous is None:
        channel_layers.backends.pop("default", None)
    else:
        channel_layers.set("default", previous)


def check_answer(replies: list[dict[str, Any]], request_id: str | None, action: str) -> None:
    assert len(replies) == 1, replies
    [frame] = replies
    codec.dumps_text(frame)  # every reply encodes
    assert frame["type"] in ("response", "acknowledgment", "error"), frame
    if request_id is not None:
        assert frame["request_id"] == request_id, frame
    else:
        assert isinstance(frame["request_id"], str) and frame["request_id"], frame
    if frame["type"] == "error":
        error = frame["error"]
        assert error["code"] in KNOWN_CODES, frame
        assert isinstance(error["retryable"], bool)
        assert_no_leak(error["message"])
    if frame["type"] == "acknowledgment":
        assert registry.get(action).mode == "async", frame
    if frame["type"] == "response" and action == "request.list":
        for record in frame["data"]["requests"]:
            assert record["request_id"] not in VICTIM_IDS, frame


@pytest.mark.parametrize("action", ACTIONS)
def test_every_payload_gets_a_known_answer(session: Session, action: str) -> None:
    pipeline = Pipeline()

    @SETTINGS
    @given(payload=payloads(action), request_id=ids, meta=metadata, raw=st.booleans())
    def run(payload: dict[str, Any], request_id: str | None, meta: Any, raw: bool) -> None:
        envelope: dict[str, Any] = {"action": action, "payload": payload}
        if request_id is not None:
            envelope["id"] = request_id
        if meta is not None:
            envelope["metadata"] = meta
        # raw: the client's own encoder (non-ASCII as is); otherwise \\u escapes.
        text = json.dumps(envelope, ensure_ascii=not raw)
        replies = asyncio.run(pipeline.handle(session, text))
        frame = replies[0] if replies else {}
        if frame.get("type") == "error" and frame["error"]["code"] == "INVALID_MESSAGE":
            return  # e.g. a lone surrogate: the frame never parsed
        check_answer(replies, request_id, action)

    run()

    # Nobody but the victim ever touched the victim's requests.
    for request_id in VICTIM_IDS:
        record = request_store.get(RequestKey(TENANT, VICTIM, request_id))
        assert record.status is RequestStatus.PENDING, record
