"""Helpers shared by the real-time tests: tokens and a thin WebSocket client."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import jwt
from channels.testing import WebsocketCommunicator

from streaming.asgi import application

SECRET = "realtime-test-secret-" + "0123456789abcdef" * 3
TIMEOUT = 5

# Fragments that only library/exception text would contain: none may reach a client.
LEAK_MARKERS = (
    "Traceback",
    "Error(",
    "Exception",
    "botocore",
    "pynamodb",
    "jwt",
    "PyJWT",
    "Signature verification",
    "Not enough segments",
    "endpoint",
    "127.0.0.1",
    "Could not connect",
    "ConditionalCheck",
    "table",
    "secret",
    "pydantic",
)


def assert_no_leak(text: str) -> None:
    lowered = text.lower()
    for marker in LEAK_MARKERS:
        assert marker.lower() not in lowered, f"{marker!r} leaked in {text!r}"


def make_token(
    sub: Any = "alice",
    tenant_id: Any = "acme",
    *,
    key: Any = SECRET,
    algorithm: str = "HS256",
    exp_in: float | None = 3600,
    permissions: Iterable[str] | None = None,
    drop: Iterable[str] = (),
    headers: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    """A JWT with the given claims; ``drop`` removes claims."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "tenant_id": tenant_id, "iat": now}
    if exp_in is not None:
        claims["exp"] = int(now + exp_in)
    if permissions is not None:
        claims["permissions"] = list(permissions)
    claims.update(extra)
    for name in drop:
        claims.pop(name, None)
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def check_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """Every server frame: an object with a type and an integer ms timestamp; error
    frames carry request_id and a well-formed error without library text."""
    assert isinstance(frame, dict)
    assert isinstance(frame.get("type"), str)
    ts = frame.get("timestamp")
    assert isinstance(ts, int) and not isinstance(ts, bool)
    assert abs(ts - time.time() * 1000) < 60_000, "timestamp is not epoch milliseconds"
    if frame["type"] == "error":
        assert "request_id" in frame
        error = frame["error"]
        assert set(error) <= {"code", "message", "details", "retryable"}
        assert isinstance(error["code"], str)
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["retryable"], bool)
        assert_no_leak(error["message"])
    return frame


class Client:
    """A connected test socket."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm

    async def send(self, frame: Any) -> None:
        await self.comm.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, wait: float = TIMEOUT) -> dict[str, Any]:
        message = await self.comm.receive_output(wait)
        assert message["type"] == "websocket.send", message
        assert "text" in message, "server frames are text frames"
        return check_frame(json.loads(message["text"]))

    async def ask(self, frame: Any) -> dict[str, Any]:
        await self.send(frame)
        return await self.recv()

    async def request(
        self, action: str, payload: Any = None, *, id: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        frame: dict[str, Any] = {"action": action, **extra}
        if payload is not None:
            frame["payload"] = payload
        if id is not None:
            frame["id"] = id
        return await self.ask(frame)

    async def data(self, action: str, payload: Any = None, **kw: Any) -> Any:
        """The ``data`` of a successful response."""
        frame = await self.request(action, payload, **kw)
        assert frame["type"] == "response", frame
        assert frame["success"] is True
        return frame["data"]

    async def silent(self, wait: float = 0.15) -> bool:
        """True when nothing arrives within ``wait`` seconds."""
        return await self.comm.receive_nothing(wait)

    async def closed_with(self, wait: float = TIMEOUT) -> tuple[int, str]:
        message = await self.comm.receive_output(wait)
        assert message["type"] == "websocket.close", message
        return message.get("code", 1000), message.get("reason", "")


def ws_path(token: str | None = None, path: str = "/ws") -> str:
    return path if token is None else f"{path}?token={token}"


@asynccontextmanager
async def connected(
    token: str | None = None,
    *,
    path: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[Client]:
    """An accepted socket (asserts the handshake succeeded and stayed open)."""
    comm = WebsocketCommunicator(
        application, path or ws_path(token or make_token()), headers=headers
    )
    ok, _ = await comm.connect(TIMEOUT)
    assert ok, "handshake was refused"
    try:
        yield Client(comm)
    finally:
        await comm.disconnect(timeout=TIMEOUT)


async def refused(
    token: str | None = None,
    *,
    path: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, str]:
    """Open a socket that the server accepts then closes: (close code, reason)."""
    comm = WebsocketCommunicator(application, path or ws_path(token), headers=headers)
    ok, code = await comm.connect(TIMEOUT)
    try:
        if not ok:
            return code, ""
        client = Client(comm)
        return await client.closed_with()
    finally:
        await comm.disconnect(timeout=TIMEOUT)
