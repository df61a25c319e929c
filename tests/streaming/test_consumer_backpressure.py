"""Backpressure (docs/protocol.md 1.1): the per-connection output limit (close 4408) and the
inbound-bytes limit (RATE_LIMITED with retry_after_ms)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from channels.testing import WebsocketCommunicator

import streaming.ratelimit
from connections.manager import manager
from protocol.errors import ErrorCode
from streaming.asgi import application
from streaming.outbox import BUFFER_EXTENSION, Outbox, server_buffer_probe
from streaming.ratelimit import TokenBucket, utf8_size
from streaming.server_integration import SLOW_CLOSE_GRACE_S, twisted_buffered_bytes
from tests.support.sockets import TIMEOUT, Client, connected, make_token, ws_path

pytestmark = pytest.mark.usefixtures("asgi_settings")


class Socket:
    """What the outbox writes to: records frames; ``gate`` closed = a client that does
    not read (the server's send waits, as uvicorn's does)."""

    def __init__(self, *, reading: bool = True) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()
        if reading:
            self.gate.set()
        self.overflows = 0

    async def send(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(text)

    def overflow(self) -> None:
        self.overflows += 1


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("text", "size"),
    [("abc", 3), ("é", 2), ("€", 3), ("😀", 4), (b"\x00\x01", 2), (None, 0), ("", 0)],
)
def test_utf8_size(text, size) -> None:
    assert utf8_size(text) == size


async def test_frames_go_out_in_order_and_are_unaccounted_once_sent() -> None:
    socket = Socket(reading=False)
    box = Outbox(socket.send, limit=1000, on_overflow=socket.overflow)
    frames = [f"frame-{i}" for i in range(10)]
    for frame in frames:
        assert await box.put(frame)
    await settle()
    assert socket.sent == []
    assert box.queued_bytes == sum(len(f) for f in frames)
    socket.gate.set()
    await settle()
    assert socket.sent == frames
    assert box.queued_bytes == 0 and box.pending_bytes == 0
    assert await box.put("later")
    await settle()
    assert socket.sent[-1] == "later"


@pytest.mark.parametrize(
    ("limit", "frame_size", "accepted"),
    [(100, 10, 10), (100, 30, 3), (100, 100, 1), (100, 250, 1), (1024, 1, 1024)],
)
async def test_backlog_past_the_limit_overflows_once(limit, frame_size, accepted) -> None:
    """The first frame always goes (a backlog is limited, not a frame size); after
    that, a frame that would take the backlog past the limit closes the outbox."""
    socket = Socket(reading=False)
    box = Outbox(socket.send, limit=limit, on_overflow=socket.overflow)
    results = [await box.put("x" * frame_size) for _ in range(accepted + 3)]
    assert results == [True] * accepted + [False] * 3
    assert socket.overflows == 1
    assert box.closed and box.queued_bytes == 0
    socket.gate.set()
    await settle()
    assert socket.sent == [], "nothing queued is written after the overflow"


@pytest.mark.parametrize(
    ("server_holds", "frame", "ok"),
    [(0, "x" * 500, True), (600, "x" * 400, True), (600, "x" * 401, False), (2000, "x", False)],
)
async def test_server_buffer_counts_against_the_limit(server_holds, frame, ok) -> None:
    """With the server's own count (daphne), frames go straight to it and its buffer is
    what is limited."""
    socket = Socket()
    box = Outbox(
        socket.send, limit=1000, on_overflow=socket.overflow, server_buffered=lambda: server_holds
    )
    assert await box.put(frame) is ok
    assert socket.sent == ([frame] if ok else [])
    assert socket.overflows == (0 if ok else 1)


@pytest.mark.parametrize("reads", [True, False], ids=["reader-reads", "reader-stuck"])
async def test_a_frame_put_with_wait_s_waits_for_room_then_overflows(reads: bool) -> None:
    """A replay's frames (put with ``wait_s``) wait for a reader that reads; one that
    takes nothing within ``wait_s`` overflows as before."""
    socket = Socket(reading=False)
    box = Outbox(socket.send, limit=100, on_overflow=socket.overflow)
    first = ["a" * 60, "b" * 40]
    for frame in first:
        assert await box.put(frame)
    waiting = asyncio.ensure_future(box.put("c" * 50, wait_s=5.0 if reads else 0.05))
    await settle()
    assert not waiting.done()
    if reads:
        socket.gate.set()
    assert await waiting is reads
    await settle()
    assert socket.sent == ([*first, "c" * 50] if reads else [])
    assert socket.overflows == (0 if reads else 1)


async def test_a_frame_waiting_for_room_gives_up_when_the_outbox_closes() -> None:
    socket = Socket(reading=False)
    box = Outbox(socket.send, limit=10, on_overflow=socket.overflow)
    assert await box.put("x" * 10)
    waiting = asyncio.ensure_future(box.put("y", wait_s=30.0))
    await settle()
    box.close()  # the socket went away
    assert await waiting is False
    assert socket.overflows == 0


@pytest.mark.parametrize(("drains", "ok"), [(True, True), (False, False)])
async def test_a_frame_waiting_for_room_rereads_the_servers_buffer(drains: bool, ok: bool) -> None:
    """daphne tells nothing when its buffer drains: the waiting frame re-reads it."""
    socket = Socket()
    held = [900]
    box = Outbox(
        socket.send, limit=1000, on_overflow=socket.overflow, server_buffered=lambda: held[0]
    )
    waiting = asyncio.ensure_future(box.put("x" * 200, wait_s=0.5))
    await settle()
    if drains:
        held[0] = 0
    assert await waiting is ok
    assert socket.sent == (["x" * 200] if ok else [])
    assert socket.overflows == (0 if ok else 1)


async def test_a_failing_send_closes_the_outbox() -> None:
    async def broken(text: str) -> None:
        raise ConnectionResetError("gone")

    box = Outbox(broken, limit=100, on_overflow=lambda: None)
    assert await box.put("a")
    await settle()
    assert box.closed
    assert not await box.put("b")


@pytest.mark.parametrize(
    ("scope", "found"),
    [
        ({}, False),
        ({"extensions": None}, False),
        ({"extensions": {BUFFER_EXTENSION: 5}}, False),
        ({"extensions": {BUFFER_EXTENSION: lambda: 5}}, True),
    ],
)
def test_server_buffer_probe(scope, found) -> None:
    probe = server_buffer_probe(scope)
    assert (probe is not None) is found
    if probe is not None:
        assert probe() == 5


def test_twisted_buffer_attributes_still_exist() -> None:
    """The daphne integration reads Twisted's write buffer; an upgrade that renames it
    must fail here rather than silently disable the output limit."""
    from twisted.internet.abstract import FileDescriptor

    descriptor = FileDescriptor()
    descriptor.connected = True
    descriptor.startWriting = lambda: None  # no reactor in a unit test
    descriptor.write(b"12345")
    descriptor.write(b"678")
    assert twisted_buffered_bytes(descriptor) == 8
    wrapper = SimpleNamespace(transport=descriptor)
    assert twisted_buffered_bytes(wrapper) == 8, "TLS wraps the TCP transport"
    assert twisted_buffered_bytes(None) == 0


def test_daphne_is_patched_for_4408() -> None:
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    assert getattr(Server.create_application, "_streamer", False)
    assert getattr(WebSocketProtocol.serverClose, "_streamer", False)
    assert SLOW_CLOSE_GRACE_S >= 5


@pytest.mark.parametrize("frames", [3, 20])
async def test_socket_whose_backlog_passes_the_limit_is_closed_4408(live, settings, frames) -> None:
    """Frames pushed to a socket whose server already holds about the limit: the first
    one past it closes with 4408, and nothing more is written."""
    settings.STREAMER_MAX_OUTPUT_BYTES = 4096
    held = {"bytes": 0}
    comm = WebsocketCommunicator(application, ws_path(make_token()))
    comm.scope["extensions"] = {BUFFER_EXTENSION: lambda: held["bytes"]}
    ok, _ = await comm.connect(TIMEOUT)
    assert ok
    client = Client(comm)
    try:
        assert (await client.request("echo", {"n": 1}))["type"] == "response"
        held["bytes"] = 3000  # the client stopped reading
        for i in range(frames):
            await manager.send_to_user(
                "acme", "alice", {"type": "note", "i": i, "fill": "y" * 1500}
            )
        code, reason = await client.closed_with()
        assert code == 4408 and reason == "Slow consumer"
        assert await client.silent()
    finally:
        await comm.disconnect(timeout=TIMEOUT)


async def test_replies_and_pushed_frames_keep_their_order(live) -> None:
    async with connected() as client:
        comm = client.comm
        for i in range(5):
            await manager.send_to_user("acme", "alice", {"type": "n", "i": i})
        await client.send({"action": "echo", "id": "after", "payload": {}})
        seen = []
        for _ in range(6):
            message = await comm.receive_output(TIMEOUT)
            seen.append(json.loads(message["text"]))
        # the layer and the socket are separate inputs: the reply may come between
        # pushed frames, but each source keeps its order
        assert [f["i"] for f in seen if "i" in f] == list(range(5))
        assert [f.get("request_id") for f in seen if "i" not in f] == ["after"]


# --- inbound bytes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "window", "takes", "expected_wait_ms"),
    [
        (1000, 10, [600, 400], 0),
        (1000, 10, [600, 401], 11),  # 1 byte short at 100 B/s: 10 ms (+1 rounding)
        (1000, 10, [1000, 500], 5001),
        (1000, 10, [5000], 0),  # larger than the capacity: costs the whole bucket
    ],
)
def test_byte_bucket(monkeypatch, capacity, window, takes, expected_wait_ms) -> None:
    monkeypatch.setattr(streaming.ratelimit, "time", SimpleNamespace(monotonic=lambda: 1.0))
    bucket = TokenBucket(capacity, window)
    waits = [bucket.take(amount) for amount in takes]
    assert waits[:-1] == [0] * (len(takes) - 1)
    assert waits[-1] == expected_wait_ms


@pytest.mark.parametrize(
    ("limit", "frame_bytes", "allowed"),
    [(100_000, 30_000, 3), (4 * 1024 * 1024, 120_000, 34), (50_000, 60_000, 1)],
)
async def test_inbound_bytes_limit(live, settings, monkeypatch, limit, frame_bytes, allowed):
    """A flood of big frames: those past the byte budget get RATE_LIMITED with
    retry_after_ms, the connection stays open, small frames still count."""
    monkeypatch.setattr(streaming.ratelimit, "time", SimpleNamespace(monotonic=lambda: 1.0))
    settings.STREAMER_MAX_INBOUND_BYTES = limit
    settings.STREAMER_MAX_FRAME_BYTES = 128 * 1024
    async with connected() as client:
        fill = "z" * (frame_bytes - 60)
        replies = []
        for i in range(allowed + 3):
            replies.append(await client.request("echo", {"f": fill}, id=f"big{i}"))
        answered = [r for r in replies if r["type"] == "response"]
        refused = [r for r in replies if r["type"] == "error"]
        assert len(answered) == allowed
        for reply in refused:
            assert reply["error"]["code"] == ErrorCode.RATE_LIMITED.value
            assert reply["error"]["retryable"] is True
            assert reply["error"]["details"]["retry_after_ms"] > 0
            assert reply["request_id"].startswith("big")
        assert len(refused) == len(replies) - len(answered) >= 3
        # still open, and a small frame goes through only when the budget allows it
        pong = await client.ask({"type": "ping"})
        assert pong["type"] in ("pong", "error")
