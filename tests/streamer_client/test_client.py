"""The Python client against a scripted in-process WebSocket server: the paths a live
stack cannot be made to take on demand (backoff, refused connections, silent sockets,
duplicate ids, lost answers)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from streamer_client import Backoff, StreamerClient, StreamerError

pytestmark = pytest.mark.timeout(30)


class Conn:
    """One server-side connection, driven by the test."""

    def __init__(self, ws: ServerConnection, auto_pong: bool) -> None:
        self.ws = ws
        self.auto_pong = auto_pong
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.all: list[dict[str, Any]] = []
        self.closed = asyncio.Event()

    @property
    def token(self) -> str | None:
        query = self.ws.request.path.split("?", 1)[1] if "?" in self.ws.request.path else ""
        for part in query.split("&"):
            if part.startswith("token="):
                return part[6:]
        return None

    async def pump(self) -> None:
        try:
            async for text in self.ws:
                frame = json.loads(text)
                self.all.append(frame)
                if frame.get("type") == "ping":
                    if self.auto_pong:
                        await self.send({"type": "pong"})
                    continue
                await self.frames.put(frame)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def next(self, action: str | None = None) -> dict[str, Any]:
        while True:
            frame = await asyncio.wait_for(self.frames.get(), 5)
            if action is None or frame.get("action") == action:
                return frame

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"timestamp": 1, **frame}))

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code, reason)

    def abort(self) -> None:
        assert self.ws.transport is not None
        self.ws.transport.abort()

    def pings(self) -> int:
        return sum(1 for f in self.all if f.get("type") == "ping")


class FakeServer:
    def __init__(self) -> None:
        self.conns: asyncio.Queue[Conn] = asyncio.Queue()
        self.auto_pong = True
        self.count = 0

    async def __aenter__(self) -> FakeServer:
        self._server = await serve(self._handler, "127.0.0.1", 0)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handler(self, ws: ServerConnection) -> None:
        self.count += 1
        conn = Conn(ws, self.auto_pong)
        await self.conns.put(conn)
        await conn.pump()

    async def accept(self) -> Conn:
        return await asyncio.wait_for(self.conns.get(), 5)


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """Backoff that records each delay it hands out (in a shared list)."""

    log: list[float] | None = None

    def delay(self, attempt: int, random: Any = None) -> float:
        value = super().delay(attempt, random) if random else super().delay(attempt)
        if self.log is not None:
            self.log.append(value)
        return value


def fast(**kw: Any) -> Backoff:
    return Backoff(initial_s=kw.pop("initial_s", 0.01), max_s=0.1, jitter=0, **kw)


async def test_backoff_delay_is_capped_and_jittered_downwards() -> None:
    b = Backoff(initial_s=0.1, max_s=1.0, factor=2, jitter=0.5)
    assert [b.delay(n, lambda: 0) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1, 1])
    assert [b.delay(n, lambda: 1) for n in range(6)] == pytest.approx(
        [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    )
    assert Backoff(jitter=3).delay(0, lambda: 1) == 0


async def test_reconnects_with_the_backoff_schedule_and_a_fresh_token_each_time() -> None:
    delays: list[float] = []
    tokens: list[str] = []
    states: list[str] = []

    async def get_token() -> str:
        tokens.append(f"t{len(tokens) + 1}")
        return tokens[-1]

    async with FakeServer() as server:
        client = StreamerClient(
            server.url,
            get_token=get_token,
            backoff=RecordingBackoff(initial_s=0.01, max_s=0.04, factor=2, jitter=0.5, log=delays),
            random=lambda: 0.5,
            on_state=states.append,
        )
        opening = asyncio.create_task(client.connect())
        first = await server.accept()
        await opening
        assert first.token == "t1"
        await first.close(1011, "Storage unavailable")  # healthy before: schedule restarts
        for _ in range(3):
            conn = await server.accept()
            conn.auto_pong = False
            await conn.close(1011)
        last = await server.accept()
        await asyncio.sleep(0.05)
        assert client.state == "open"
        assert last.token == "t5"
        await client.close()
    assert delays == pytest.approx([0.0075, 0.015, 0.03, 0.03])
    assert states == ["connecting", "open", "reconnecting", "open", "closed"]


async def test_unreachable_server_gives_up_after_max_attempts() -> None:
    errors: list[StreamerError] = []
    client = StreamerClient(
        "ws://127.0.0.1:9/ws", token="x", backoff=fast(max_attempts=2), on_error=errors.append
    )
    with pytest.raises(StreamerError) as caught:
        await client.request("echo", {})
    assert caught.value.code == "CONNECTION_LOST"
    assert [e.code for e in errors] == ["CONNECTION_LOST"]
    assert client.state == "closed"


async def test_get_token_failure_is_retried() -> None:
    calls: list[int] = []

    def get_token() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("token service down")
        return "good"

    async with FakeServer() as server:
        client = StreamerClient(server.url, get_token=get_token, backoff=fast())
        opening = asyncio.create_task(client.connect())
        conn = await server.accept()
        await opening
        assert conn.token == "good"
        await client.close()


@pytest.mark.parametrize(("code", "expected"), [(4401, "UNAUTHORIZED"), (4403, "TENANT_FORBIDDEN")])
async def test_refused_for_good(code: int, expected: str) -> None:
    errors: list[StreamerError] = []
    async with FakeServer() as server:
        server.auto_pong = False
        client = StreamerClient(server.url, token="t", backoff=fast(), on_error=errors.append)
        opening = asyncio.create_task(client.connect())
        pending = asyncio.create_task(client.request("echo", {}))
        conn = await server.accept()
        await conn.close(code, "No")
        with pytest.raises(StreamerError) as caught:
            await opening
        with pytest.raises(StreamerError):
            await pending
        await asyncio.sleep(0.05)
        assert server.count == 1
    assert caught.value.code == expected
    assert caught.value.close_code == code
    assert [e.code for e in errors] == [expected]


async def test_too_many_connections_is_retried_a_few_times() -> None:
    errors: list[str] = []
    async with FakeServer() as server:
        server.auto_pong = False
        client = StreamerClient(
            server.url,
            token="t",
            backoff=fast(),
            too_many_connections_retries=2,
            on_error=lambda e: errors.append(e.code),
        )
        opening = asyncio.create_task(client.connect())
        for _ in range(3):
            await (await server.accept()).close(4429)
        with pytest.raises(StreamerError) as caught:
            await opening
    assert caught.value.code == "TOO_MANY_CONNECTIONS"
    assert errors == ["TOO_MANY_CONNECTIONS"] * 3


async def test_heartbeat_pings_and_drops_a_silent_socket() -> None:
    async with FakeServer() as server:
        client = StreamerClient(server.url, token="t", heartbeat_s=0.1, backoff=fast())
        opening = asyncio.create_task(client.connect())
        first = await server.accept()
        await opening
        await asyncio.sleep(0.25)
        assert first.pings() >= 3  # the opening ping and the heartbeat's
        first.auto_pong = False
        second = await server.accept()  # dropped after a silent period, reconnected
        assert first.closed.is_set()
        await asyncio.sleep(0.05)
        assert client.state == "open"
        assert second.pings() >= 1
        await client.close()


async def test_opens_without_pong_after_the_handshake_timeout() -> None:
    async with FakeServer() as server:
        server.auto_pong = False
        client = StreamerClient(server.url, token="t", handshake_timeout_s=0.05, heartbeat_s=0)
        opening = asyncio.create_task(client.connect())
        await server.accept()
        await asyncio.wait_for(opening, 2)
        assert client.state == "open"
        await client.close()


async def test_messages_progress_and_late_frames() -> None:
    messages: list[dict[str, Any]] = []
    got: list[dict[str, Any]] = []

    async def on_message(frame: dict[str, Any]) -> None:
        got.append(frame)

    async with FakeServer() as server:
        client = StreamerClient(
            server.url, token="t", on_message=lambda f: [messages.append(f), on_message(f)][1]
        )
        opening = asyncio.create_task(client.connect())
        conn = await server.accept()
        await opening
        seen: list[tuple[float, str]] = []
        job = asyncio.create_task(
            client.request(
                "generate_report", {}, on_progress=lambda p: seen.append((p.percentage, p.message))
            )
        )
        frame = await conn.next("generate_report")
        rid = frame["id"]
        await conn.send({"type": "acknowledgment", "request_id": rid, "status": "queued"})
        await conn.send({"type": "progress", "request_id": rid, "percentage": 30, "message": "a"})
        await conn.send({"type": "progress", "request_id": rid, "percentage": 30, "message": "a"})
        await conn.send({"type": "progress", "request_id": rid, "percentage": 10, "message": "x"})
        await conn.send({"type": "message", "data": {"text": "hi"}})
        await conn.send({"type": "complete", "request_id": rid, "success": True, "result": 1})
        await conn.send({"type": "complete", "request_id": rid, "success": True, "result": 2})
        await conn.send({"type": "error", "request_id": None, "error": {"code": "INVALID_MESSAGE"}})
        await conn.ws.send("not json")
        assert await job == 1
        failing = asyncio.create_task(client.request("custom", {}))
        frame = await conn.next("custom")
        await conn.send(
            {"type": "response", "request_id": frame["id"], "success": False, "data": {}}
        )
        with pytest.raises(StreamerError) as caught:
            await failing
        assert caught.value.code == "PROCESSING_FAILED"
        await asyncio.sleep(0.05)
        await client.close()
    assert seen == [(30, "a")]
    assert [m["type"] for m in messages] == ["message", "error"]
    assert got == messages


async def test_unanswered_requests_are_resent_and_a_duplicate_is_followed() -> None:
    async with FakeServer() as server:
        client = StreamerClient(server.url, token="t", backoff=fast())
        opening = asyncio.create_task(client.connect())
        first = await server.accept()
        await opening
        job = asyncio.create_task(client.request("generate_report", {}, id="r"))
        await first.next("generate_report")
        first.abort()  # before any acknowledgment
        second = await server.accept()
        again = await second.next("generate_report")
        assert again["id"] == "r"
        await second.send(
            {
                "type": "error",
                "request_id": "r",
                "error": {"code": "DUPLICATE_REQUEST", "message": "Dup", "retryable": False},
            }
        )
        status = await second.next("request.status")
        assert status["payload"] == {"request_id": "r", "subscribe": True}
        await second.send(
            {
                "type": "response",
                "request_id": status["id"],
                "success": True,
                "data": {"request_id": "r", "status": "COMPLETED", "result": {"ok": 1}},
            }
        )
        assert await job == {"ok": 1}
        await client.close()


async def test_resume_retries_a_retryable_error_and_gives_up_on_not_found() -> None:
    async with FakeServer() as server:
        client = StreamerClient(server.url, token="t", backoff=fast())
        opening = asyncio.create_task(client.connect())
        first = await server.accept()
        await opening
        a = asyncio.create_task(client.request("generate_report", {}, id="a"))
        b = asyncio.create_task(client.request("generate_report", {}, id="b"))
        for rid in ("a", "b"):
            await first.next("generate_report")
            await first.send({"type": "acknowledgment", "request_id": rid, "status": "queued"})
        await asyncio.sleep(0.05)
        first.abort()
        second = await server.accept()
        probes = {}
        for _ in range(2):
            frame = await second.next("request.status")
            probes[frame["payload"]["request_id"]] = frame["id"]
        await second.send(
            {
                "type": "error",
                "request_id": probes["a"],
                "error": {"code": "SERVICE_UNAVAILABLE", "message": "Later", "retryable": True},
            }
        )
        await second.send(
            {
                "type": "error",
                "request_id": probes["b"],
                "error": {"code": "NOT_FOUND", "message": "Request not found", "retryable": False},
            }
        )
        with pytest.raises(StreamerError) as caught:
            await b
        assert caught.value.code == "NOT_FOUND"
        assert caught.value.request_id == "b"
        retry = await second.next("request.status")
        assert retry["payload"]["request_id"] == "a"
        record = {"request_id": "a", "status": "PROCESSING", "percentage": 50, "message": "m"}
        await second.send(
            {"type": "response", "request_id": retry["id"], "success": True, "data": record}
        )
        await second.send(
            {
                "type": "error",
                "request_id": "a",
                "error": {"code": "PROCESSING_FAILED", "message": "Boom", "retryable": False},
            }
        )
        with pytest.raises(StreamerError) as failed:
            await a
        assert failed.value.message == "Boom"
        await client.close()


async def test_without_retry_unanswered_requests_fail_with_connection_lost() -> None:
    async with FakeServer() as server:
        client = StreamerClient(server.url, token="t", backoff=fast(), retry_unacknowledged=False)
        opening = asyncio.create_task(client.connect())
        first = await server.accept()
        await opening
        job = asyncio.create_task(client.request("echo", {}))
        await first.next("echo")
        first.abort()
        await server.accept()
        with pytest.raises(StreamerError) as caught:
            await job
        assert caught.value.code == "CONNECTION_LOST"
        assert caught.value.retryable
        await client.close()


async def test_timeout_and_duplicate_ids_and_closed_client() -> None:
    async with FakeServer() as server:
        client = StreamerClient(server.url, token="t")
        await asyncio.gather(client.connect(), server.accept())
        with pytest.raises(StreamerError) as caught:
            await client.request("echo", {}, timeout_s=0.05, id="slow")
        assert caught.value.code == "TIMEOUT"
        assert caught.value.retryable
        first = asyncio.create_task(client.request("echo", {}, id="same"))
        await asyncio.sleep(0.01)
        with pytest.raises(StreamerError) as dup:
            await client.request("echo", {}, id="same")
        assert dup.value.code == "DUPLICATE_REQUEST"
        await client.close()
        with pytest.raises(StreamerError) as closed:
            await first
        assert closed.value.code == "CLOSED"
    with pytest.raises(StreamerError):
        await client.request("echo", {})


async def test_cancel_before_the_acknowledgment_cancels_again_after_it() -> None:
    async with FakeServer() as server:
        client = StreamerClient(server.url, token="t")
        opening = asyncio.create_task(client.connect())
        conn = await server.accept()
        await opening
        job = asyncio.create_task(client.request("generate_report", {}, id="c"))
        await conn.next("generate_report")
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        first = await conn.next("request.cancel")
        assert first["payload"] == {"request_id": "c"}
        await conn.send({"type": "acknowledgment", "request_id": "c", "status": "queued"})
        second = await conn.next("request.cancel")
        assert second["payload"] == {"request_id": "c"}
        await conn.send({"type": "error", "request_id": "c", "error": {"code": "CANCELLED"}})
        await client.close()


async def test_context_manager_and_drop_without_socket() -> None:
    async with FakeServer() as server:
        client = StreamerClient(server.url, token="t")
        client.drop_connection()  # nothing to drop yet
        accepted = asyncio.create_task(server.accept())
        async with client:
            await accepted
            assert client.state == "open"
            await client.connect()  # already open
        assert client.state == "closed"


async def test_cancelling_while_offline_cancels_once_reconnected() -> None:
    async with FakeServer() as server:
        client = StreamerClient(server.url, token="t", backoff=fast(initial_s=0.2))
        opening = asyncio.create_task(client.connect())
        first = await server.accept()
        await opening
        job = asyncio.create_task(client.request("generate_report", {}, id="off"))
        await first.next("generate_report")
        await first.send({"type": "acknowledgment", "request_id": "off", "status": "queued"})
        await asyncio.sleep(0.02)
        first.abort()
        await first.closed.wait()
        await asyncio.sleep(0.02)
        assert client.state == "reconnecting"
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        second = await server.accept()
        cancel = await second.next()
        assert cancel["action"] == "request.cancel"
        assert cancel["payload"] == {"request_id": "off"}
        await client.close()


async def test_resume_follows_a_request_started_elsewhere() -> None:
    seen: list[float] = []
    async with FakeServer() as server:
        client = StreamerClient(server.url, token="t", backoff=fast())
        job = asyncio.create_task(
            client.resume("old", on_progress=lambda p: seen.append(p.percentage))
        )
        first = await server.accept()
        probe = await first.next("request.status")
        assert probe["payload"] == {"request_id": "old", "subscribe": True}
        record = {"request_id": "old", "status": "RETRYING", "percentage": 40, "message": ""}
        await first.send(
            {"type": "response", "request_id": probe["id"], "success": True, "data": record}
        )
        await asyncio.sleep(0.02)
        first.abort()
        second = await server.accept()
        probe = await second.next("request.status")
        assert probe["payload"] == {"request_id": "old", "subscribe": True}
        await second.send({"type": "complete", "request_id": "old", "success": True, "result": 5})
        assert await job == 5
        assert seen == [40]
        # while open: the probe goes out at once
        other = asyncio.create_task(client.resume("other"))
        probe = await second.next("request.status")
        assert probe["payload"]["request_id"] == "other"
        other.cancel()
        with pytest.raises(asyncio.CancelledError):
            await other
        cancel = await second.next("request.cancel")
        assert cancel["payload"] == {"request_id": "other"}
        await client.close()


async def test_output_once_each_in_order_and_resumed_after_the_last_seq() -> None:
    chunks: list[tuple[int, Any]] = []
    async with FakeServer() as server:
        client = StreamerClient(server.url, token="t", backoff=fast())
        job = asyncio.create_task(
            client.request(
                "generate_report", id="o1", on_output=lambda data, seq: chunks.append((seq, data))
            )
        )
        first = await server.accept()
        await first.next("generate_report")
        for seq, data in ((1, "a"), (3, "c"), (2, {"b": 1}), (2, "repeat")):
            await first.send({"type": "output", "request_id": "o1", "seq": seq, "data": data})
        await asyncio.sleep(0.05)
        assert chunks == [(1, "a"), (2, {"b": 1}), (3, "c")]
        first.abort()
        second = await server.accept()
        probe = await second.next("request.status")
        assert probe["payload"] == {"request_id": "o1", "subscribe": True, "after_seq": 3}
        record = {"request_id": "o1", "status": "COMPLETED", "percentage": 100, "message": ""}
        record |= {"result": 7, "output_seq": 4}
        await second.send(
            {"type": "response", "request_id": probe["id"], "success": True, "data": record}
        )
        await asyncio.sleep(0.05)
        assert not job.done(), "settles after the replayed chunk"
        await second.send({"type": "output", "request_id": "o1", "seq": 4, "data": "d"})
        assert await job == 7
        assert [seq for seq, _ in chunks] == [1, 2, 3, 4]
        await client.close()


# --- token refresh (auth.refresh, docs/protocol.md 1.1) -------------------------------------------


def jwt_with(**claims: Any) -> str:
    """An unsigned JWT-shaped token (the client decodes ``exp``, never verifies)."""

    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.sig"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (jwt_with(exp=1234), 1234.0),
        (jwt_with(exp=12.5), 12.5),
        (jwt_with(exp="soon"), None),
        (jwt_with(exp=True), None),
        (jwt_with(sub="x"), None),
        ("abc", None),
        ("a.!!!.c", None),
        (None, None),
    ],
)
def test_token_expires_at(token: str | None, expected: float | None) -> None:
    from streamer_client import token_expires_at

    assert token_expires_at(token) == expected


class Tokens:
    """get_token handing out tokens that expire ``life_s`` after they are issued."""

    def __init__(self, life_s: float) -> None:
        self.life_s = life_s
        self.issued: list[str] = []

    def __call__(self) -> str:
        self.issued.append(jwt_with(sub="u", exp=time.time() + self.life_s, n=len(self.issued)))
        return self.issued[-1]


async def test_refreshes_the_token_on_the_open_socket_before_it_expires() -> None:
    tokens = Tokens(life_s=1.0)
    async with FakeServer() as server:
        client = StreamerClient(server.url, get_token=tokens, refresh_lead_s=0.5, backoff=fast())
        opening = asyncio.create_task(client.connect())
        conn = await server.accept()
        await opening
        assert conn.token == tokens.issued[0]
        for n in (1, 2):  # refreshed again from the new token's own expiry
            refresh = await conn.next("auth.refresh")
            assert refresh["payload"] == {"token": tokens.issued[n]}
            await conn.send(
                {"type": "response", "request_id": refresh["id"], "success": True, "data": {}}
            )
        assert server.count == 1, "no reconnection"
        assert client.state == "open"
        await client.close()


async def test_a_refused_refresh_keeps_the_socket_until_the_server_closes_it() -> None:
    tokens = Tokens(life_s=0.6)
    async with FakeServer() as server:
        client = StreamerClient(server.url, get_token=tokens, refresh_lead_s=0.3, backoff=fast())
        opening = asyncio.create_task(client.connect())
        first = await server.accept()
        await opening
        refresh = await first.next("auth.refresh")
        await first.send(
            {
                "type": "error",
                "request_id": refresh["id"],
                "error": {"code": "FORBIDDEN", "message": "Token refused", "retryable": False},
            }
        )
        await asyncio.sleep(0.1)
        assert client.state == "open" and not first.closed.is_set()
        await first.close(4401, "Token expired")
        second = await server.accept()
        assert second.token == tokens.issued[-1] != tokens.issued[0]
        await client.close()


async def test_no_refresh_without_get_token() -> None:
    async with FakeServer() as server:
        client = StreamerClient(server.url, token=jwt_with(exp=time.time() + 0.4))
        opening = asyncio.create_task(client.connect())
        conn = await server.accept()
        await opening
        await asyncio.sleep(0.6)
        assert [f for f in conn.all if f.get("action") == "auth.refresh"] == []
        await client.close()
