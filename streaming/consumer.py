"""The WebSocket consumer at ``/ws``: sockets held by our own daphne servers.

Authentication and session opening happen on connect (close codes of PROTOCOL.md §1,
sent after accept so browsers can read them); every frame then goes through the shared
:class:`~streaming.pipeline.Pipeline`. Frames pushed from elsewhere (workers, other
processes) arrive as ``streamer.frame`` channel messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from protocol import codec
from storage.connection import connection_store
from storage.errors import StoreError
from streaming.auth import (
    TOKEN_EXPIRED,
    UNAUTHORIZED,
    AuthFailure,
    asgi_headers,
    extract_token,
    parse_query,
    verify_token,
)
from streaming.metrics import CONNECTIONS, CONNECTS, FRAMES_OUT, SLOW_CONSUMERS
from streaming.outbox import Outbox, server_buffer_probe
from streaming.pipeline import Pipeline
from streaming.session import Session, close_session, open_session

log = logging.getLogger(__name__)

_pipeline: Pipeline | None = None


def get_pipeline() -> Pipeline:
    """The process-wide pipeline, built from settings on first use."""
    global _pipeline
    if _pipeline is None:
        _pipeline = Pipeline(max_frame_bytes=settings.STREAMER_MAX_FRAME_BYTES)
    return _pipeline


class StreamerConsumer(AsyncWebsocketConsumer):
    """One client socket."""

    session: Session | None = None
    outbox: Outbox | None = None
    _idle_handle: asyncio.TimerHandle | None = None
    _expiry_handle: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        scope = self.scope
        headers = asgi_headers(scope.get("headers", []))
        try:
            identity = verify_token(
                extract_token(parse_query(scope.get("query_string", b"")), headers)
            )
            client = scope.get("client") or (None, None)
            self.session = await open_session(
                identity,
                connection_id=uuid.uuid4().hex,
                transport="channels",
                address=self.channel_name,
                user_agent=headers.get("user-agent", ""),
                source_ip=client[0],
            )
        except AuthFailure as failure:
            CONNECTS.labels(str(failure.close_code)).inc()
            await self.accept()
            await self.close(code=failure.close_code, reason=failure.reason)
            return
        CONNECTS.labels("accepted").inc()
        CONNECTIONS.inc()
        self.outbox = Outbox(
            self._send_text,
            limit=settings.STREAMER_MAX_OUTPUT_BYTES,
            on_overflow=self._slow_consumer,
            server_buffered=server_buffer_probe(self.scope),
        )
        await self.accept()
        self._last_activity = self._last_touch = time.monotonic()
        self._schedule_idle_check(settings.STREAMER_IDLE_TIMEOUT_S)
        self._schedule_expiry_check()

    async def disconnect(self, code: int) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        if self.outbox is not None:
            self.outbox.close()
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
        if self.session is not None:
            session, self.session = self.session, None
            CONNECTIONS.dec()
            await close_session(session)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.session is None or self.outbox is None:
            return
        self._last_activity = time.monotonic()
        if self._last_activity - self._last_touch >= settings.STREAMER_TOUCH_INTERVAL_S:
            self._touch()
        binary = text_data is None
        replies = await get_pipeline().handle(
            self.session, text_data if not binary else bytes_data, binary=binary
        )
        for frame in replies:
            FRAMES_OUT.labels(frame["type"]).inc()
            await self.outbox.put(codec.dumps_text(frame))

    async def streamer_frame(self, message: dict[str, Any]) -> None:
        """A frame pushed to this socket from a worker or another process."""
        if self.session is None or self.outbox is None:
            return
        for text in self.session.guard.admit(message):
            FRAMES_OUT.labels(message.get("frame_type") or "other").inc()
            await self.outbox.put(text)

    async def streamer_frames(self, message: dict[str, Any]) -> None:
        """Several frames pushed at once, in order (a batch of a request's output)."""
        for frame_message in message["frames"]:
            await self.streamer_frame(frame_message)

    async def streamer_close(self, message: dict[str, Any]) -> None:
        """Close this socket on request (admin disconnect, tenant disabled)."""
        await self.close(code=int(message.get("code", 1000)), reason=message.get("reason") or None)

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    def _slow_consumer(self) -> None:
        """The client stopped reading and its backlog passed STREAMER_MAX_OUTPUT_BYTES:
        close with 4408 (PROTOCOL.md §1); it reconnects and resumes from storage."""
        SLOW_CONSUMERS.inc()
        log.info("closing slow consumer %s", self.session and self.session.connection_id)
        self._closing = asyncio.ensure_future(self.close(code=4408, reason="Slow consumer"))

    def _touch(self) -> None:
        """Record liveness (``last_seen``) at most once per STREAMER_TOUCH_INTERVAL_S, in
        the background: ``cleanup_connections`` relies on it, frames never wait for it."""
        assert self.session is not None
        self._last_touch = self._last_activity
        connection_id = self.session.connection_id

        def touch() -> None:
            try:
                connection_store.touch(connection_id)
            except StoreError:
                log.debug("could not record last_seen of %s", connection_id)

        self._touching = asyncio.ensure_future(asyncio.to_thread(touch))

    def _schedule_idle_check(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._idle_handle = loop.call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        if self.session is None:
            return
        idle_for = time.monotonic() - self._last_activity
        timeout = settings.STREAMER_IDLE_TIMEOUT_S
        if idle_for >= timeout:
            self._closing = asyncio.ensure_future(self.close(code=1000, reason="Idle timeout"))
        else:
            self._schedule_idle_check(timeout - idle_for)

    def _schedule_expiry_check(self) -> None:
        """Close with 4401 when the token expires (PROTOCOL.md §1, 1.1), unless an
        ``auth.refresh`` replaced it meanwhile: then wait for the new token's expiry."""
        assert self.session is not None
        left = self.session.identity.seconds_left()
        if left is not None:
            loop = asyncio.get_running_loop()
            # never sooner than 50 ms: rounding must not make this a busy loop
            self._expiry_handle = loop.call_later(max(left, 0.05), self._expiry_check)

    def _expiry_check(self) -> None:
        if self.session is None:
            return
        if self.session.identity.expired():
            self._closing = asyncio.ensure_future(
                self.close(code=UNAUTHORIZED, reason=TOKEN_EXPIRED)
            )
        else:
            self._schedule_expiry_check()
