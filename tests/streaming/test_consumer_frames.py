"""Client frames over a real socket (docs/protocol.md §2, §4): every bad frame is answered
with an error frame and never closes the connection."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest

import streaming.pipeline
import streaming.ratelimit
from protocol.errors import ErrorCode
from streaming.actions.registry import action, registry
from tests.support.sockets import connected, make_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("asgi_settings")]

KIB = 1024


async def still_alive(client) -> None:
    """A bad frame never closes the connection: the next request is answered."""
    pong = await client.ask({"type": "ping"})
    assert pong["type"] == "pong"


def error_of(frame: dict, code: ErrorCode) -> dict:
    assert frame["type"] == "error", frame
    assert frame["error"]["code"] == code.value
    assert frame["error"]["retryable"] is code.retryable
    return frame["error"]


async def test_binary_frame_is_invalid_message(live) -> None:
    async with connected() as client:
        await client.comm.send_to(bytes_data=b'{"action": "echo"}')
        frame = await client.recv()
        error = error_of(frame, ErrorCode.INVALID_MESSAGE)
        assert frame["request_id"] is None
        assert error["details"]["reason"] == "binary"
        await still_alive(client)


def _echo_frame_of_size(size: int) -> str:
    frame = json.dumps({"id": "big", "action": "echo", "payload": {"pad": ""}})
    return frame.replace('"pad": ""', '"pad": "' + "x" * (size - len(frame)) + '"')


@pytest.mark.parametrize(
    ("limit", "size", "accepted"),
    [
        (None, 128 * KIB, True),
        (None, 128 * KIB + 1, False),
        (None, 300 * KIB, False),
        (2 * KIB, 2 * KIB, True),
        (2 * KIB, 2 * KIB + 1, False),
    ],
)
async def test_frame_size_limit(live, settings, limit, size, accepted) -> None:
    if limit is not None:
        settings.STREAMER_MAX_FRAME_BYTES = limit
        streaming.pipeline._pipeline = None
    text = _echo_frame_of_size(size)
    assert len(text.encode()) == size
    async with connected() as client:
        frame = await client.ask(text)
        if accepted:
            assert frame["type"] == "response"
            assert frame["request_id"] == "big"
            assert len(frame["data"]["echo"]["pad"]) > size - 100
        else:
            error = error_of(frame, ErrorCode.INVALID_MESSAGE)
            assert error["details"]["reason"] == "too_large"
            assert frame["request_id"] is None
        await still_alive(client)


async def test_size_limit_counts_utf8_bytes(live, settings) -> None:
    settings.STREAMER_MAX_FRAME_BYTES = 1 * KIB
    streaming.pipeline._pipeline = None
    text = json.dumps({"action": "echo", "payload": {"s": "é" * 600}}, ensure_ascii=False)
    assert len(text) < KIB < len(text.encode())
    async with connected() as client:
        error = error_of(await client.ask(text), ErrorCode.INVALID_MESSAGE)
        assert error["details"]["reason"] == "too_large"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "not_json"),
        ("hello", "not_json"),
        ("{'action': 'echo'}", "not_json"),
        ('{"action": "echo"} trailing', "not_json"),
        ("[]", "not_object"),
        ('[{"action": "echo"}]', "not_object"),
        ("1", "not_object"),
        ('"echo"', "not_object"),
        ("null", "not_object"),
        ("true", "not_object"),
    ],
)
async def test_unparseable_frames(live, text, reason) -> None:
    async with connected() as client:
        frame = await client.ask(text)
        error = error_of(frame, ErrorCode.INVALID_MESSAGE)
        assert error["details"]["reason"] == reason
        assert frame["request_id"] is None, "nothing could be parsed, so no id"
        await still_alive(client)


@pytest.mark.parametrize(
    ("frame", "fields", "keeps_id"),
    [
        (
            {"type": "bogus", "id": "", "action": "bad action!", "payload": [], "metadata": "x"},
            {"type", "id", "action", "payload", "metadata"},
            False,
        ),
        ({"id": "r1"}, {"action"}, True),
        ({"id": "r1", "action": None}, {"action"}, True),
        ({"id": "r1", "action": ""}, {"action"}, True),
        ({"id": "r1", "action": "a" * 65}, {"action"}, True),
        ({"id": "r1", "action": "with space"}, {"action"}, True),
        ({"id": "r1", "action": 5}, {"action"}, True),
        ({"id": 5, "action": "echo"}, {"id"}, False),
        ({"id": "x" * 129, "action": "echo"}, {"id"}, False),
        ({"id": "r1", "action": "echo", "payload": "text"}, {"payload"}, True),
        ({"id": "r1", "action": "echo", "payload": [1]}, {"payload"}, True),
        ({"id": "r1", "action": "echo", "metadata": [1]}, {"metadata"}, True),
        ({"id": "r1", "action": "echo", "metadata": {"m": "x" * 4100}}, {"metadata"}, True),
        ({"id": "r1", "type": "Request", "action": "echo"}, {"type"}, True),
        ({"id": "r1", "type": 3, "action": "echo"}, {"type"}, True),
        ({"ID": "r1", "Action": "echo"}, {"action"}, False),
    ],
)
async def test_envelope_validation_lists_every_field(live, frame, fields, keeps_id) -> None:
    async with connected() as client:
        reply = await client.ask(frame)
        error = error_of(reply, ErrorCode.VALIDATION_ERROR)
        errors = error["details"]["errors"]
        assert {e["field"] for e in errors} == fields
        assert all(isinstance(e["message"], str) and e["message"] for e in errors)
        if keeps_id:
            assert reply["request_id"] == frame["id"]
        else:
            # parsed but without a usable id: a generated one, never null
            assert uuid.UUID(reply["request_id"]).version == 4
        await still_alive(client)


@pytest.mark.parametrize(
    "frame",
    [
        {"id": "ok", "action": "echo", "payload": {"a": 1}},
        {"id": "ok", "type": "request", "action": "echo", "payload": {"a": 1}},
        {"id": "ok", "action": "echo", "payload": {"a": 1}, "extra": True, "Payload": 2},
        {"id": "ok", "action": "echo", "payload": {"a": 1}, "metadata": None},
        {"id": "ok", "action": "echo", "payload": {"a": 1}, "type": None},
    ],
)
async def test_valid_request_envelopes(live, frame) -> None:
    async with connected() as client:
        reply = await client.ask(frame)
        assert reply["type"] == "response"
        assert reply["request_id"] == "ok"
        assert reply["data"] == {"echo": {"a": 1}}
        assert "metadata" not in reply


@pytest.mark.parametrize("request_id", ["x", "x" * 128, "ü-ñ 🙂", "acme#bob#1"])
async def test_request_id_boundaries(live, request_id) -> None:
    async with connected() as client:
        reply = await client.request("echo", {}, id=request_id)
        assert reply["type"] == "response"
        assert reply["request_id"] == request_id


@pytest.mark.parametrize("name", ["a", "A.b_c-9", "x" * 64])
async def test_action_name_boundaries(live, name) -> None:
    async with connected() as client:
        reply = await client.request(name, {}, id="n")
        # a well-formed name reaches the router: unknown, not invalid
        assert reply["error"]["code"] == "INVALID_ACTION"


async def test_generated_request_id(live) -> None:
    async with connected() as client:
        first = await client.ask({"action": "echo"})
        second = await client.ask({"action": "echo"})
        for reply in (first, second):
            assert uuid.UUID(reply["request_id"]).version == 4
            assert reply["data"] == {"echo": {}}
        assert first["request_id"] != second["request_id"]


async def test_unknown_action(live) -> None:
    async with connected() as client:
        reply = await client.request("does.not.exist", {}, id="u1")
        error = error_of(reply, ErrorCode.INVALID_ACTION)
        assert reply["request_id"] == "u1"
        assert error["details"] == {"action": "does.not.exist"}
        await still_alive(client)


@pytest.fixture
def secret_action():
    @action("test.secret", permission="secrets.read")
    def read_secret(ctx, payload):  # a sync handler, run in a thread
        return {"user": ctx.user_id, "tenant": ctx.tenant_id}

    yield read_secret
    registry.unregister("test.secret")


@pytest.mark.parametrize(
    ("permissions", "allowed"),
    [
        (None, False),
        ([], False),
        (["secrets.write", "SECRETS.READ"], False),
        (["secrets.read"], True),
        (["other", "secrets.read"], True),
    ],
)
async def test_permission(live, secret_action, permissions, allowed) -> None:
    token = make_token(sub="carol", permissions=permissions)
    async with connected(token) as client:
        reply = await client.request("test.secret", {}, id="s1")
        assert reply["request_id"] == "s1"
        if allowed:
            assert reply["type"] == "response"
            assert reply["data"] == {"user": "carol", "tenant": "acme"}
        else:
            error = error_of(reply, ErrorCode.FORBIDDEN)
            assert error["details"] == {"action": "test.secret"}
            await still_alive(client)


async def test_permission_checked_before_payload(live, secret_action) -> None:
    async with connected() as client:
        reply = await client.request("test.secret", "not-an-object", id="s2")
        # an envelope error is about the frame and comes first
        error_of(reply, ErrorCode.VALIDATION_ERROR)
        reply = await client.request("test.secret", {"anything": 1}, id="s3")
        error_of(reply, ErrorCode.FORBIDDEN)


@pytest.mark.parametrize(
    "ping",
    [{"type": "ping"}, {"type": "ping", "id": "p", "action": "whatever", "payload": 3}],
)
async def test_ping_pong(live, ping) -> None:
    async with connected() as client:
        pong = await client.ask(ping)
        assert pong["type"] == "pong"
        assert set(pong) == {"type", "timestamp"}


async def test_rate_limit(live) -> None:
    """Tenant "slow" allows 3 frames per 10 s per connection."""
    async with connected(make_token(tenant_id="slow")) as client:
        for i in range(3):
            assert (await client.request("echo", {}, id=f"ok{i}"))["type"] == "response"
        reply = await client.request("echo", {}, id="over")
        error = error_of(reply, ErrorCode.RATE_LIMITED)
        assert reply["request_id"] == "over"
        retry = error["details"]["retry_after_ms"]
        assert isinstance(retry, int)
        assert 2000 < retry <= 10_000, "one frame every 3.3 s"
        # every kind of frame counts, and none closes the socket
        for frame in ({"type": "ping"}, "not json", {"id": "v", "action": "echo"}):
            reply = await client.ask(frame)
            error_of(reply, ErrorCode.RATE_LIMITED)
        assert await client.silent()


async def test_rate_limit_is_per_connection(live) -> None:
    token = make_token(tenant_id="slow")
    async with connected(token) as one, connected(token) as two:
        for _ in range(3):
            await one.request("echo", {})
        error_of(await one.request("echo", {}), ErrorCode.RATE_LIMITED)
        assert (await two.request("echo", {}))["type"] == "response"


async def test_default_rate_limit_allows_100_frames(live, monkeypatch) -> None:
    """100 frames per 10 s: with the clock stopped the bucket never refills."""
    monkeypatch.setattr(streaming.ratelimit, "time", SimpleNamespace(monotonic=lambda: 1000.0))
    async with connected() as client:
        for i in range(100):
            await client.send({"type": "ping"} if i % 2 else {"id": str(i), "action": "echo"})
        replies = [await client.recv() for _ in range(100)]
        assert all(r["type"] in {"pong", "response"} for r in replies)
        error = error_of(await client.request("echo", {}), ErrorCode.RATE_LIMITED)
        assert error["details"]["retry_after_ms"] in (100, 101), "one token every 100 ms"


@pytest.fixture
def broken_action():
    @action("test.broken")
    async def broken(ctx, payload):
        raise RuntimeError("KeyError: 'secret' at /srv/app/internal.py line 42")

    yield broken
    registry.unregister("test.broken")


async def test_unexpected_handler_exception_is_internal_error(live, broken_action) -> None:
    async with connected() as client:
        reply = await client.request("test.broken", {}, id="b1")
        error = error_of(reply, ErrorCode.INTERNAL_ERROR)
        assert reply["request_id"] == "b1"
        assert "details" not in error
        assert "KeyError" not in error["message"] and "internal.py" not in error["message"]
        await still_alive(client)
