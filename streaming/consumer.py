"""The WebSocket consumer at ``/ws``: sockets held by our own daphne servers.

Authentication, session, metrics and ``last_seen`` are the shared edge's
(:mod:`streaming.edge`, also used by the API Gateway handlers); this consumer adds what
only a socket we hold has: close codes sent after accept so browsers can read them
(docs/protocol.md §1), backpressure (:mod:`streaming.outbox`), the idle and token-expiry
timers. Frames pushed from elsewhere (workers, other
processes) arrive as ``streamer.frame`` channel messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from connections.hub import Member, hub
from protocol import codec
from streaming.auth import (
    TOKEN_EXPIRED,
    UNAUTHORIZED,
    AuthFailure,
    asgi_headers,
    extract_token,
    parse_query,
)
from streaming.dispatch_loop import dispatch_loop
from streaming.edge import channels_edge
from streaming.metrics import SLOW_CONSUMERS
from streaming.outbox import Outbox, server_buffer_probe
from streaming.session import Session

log = logging.getLogger(__name__)

#: Messages answered without Channels' per-message ``close_old_connections``. That call is
#: a thread hop (about a third of a bare consumer's echo round trip, measured with
#: cProfile: docs/performance.md "Echo"); these handlers reach the database only through
#: ``database_sync_to_async`` (:func:`streaming.session.active_policy`), which closes
#: stale connections itself, on the thread that uses them.
#: Connects too: in a reconnect storm the hop was 7 % of the event loop (bench.storm,
#: py-spy, 2026-11-28).
NO_DATABASE_MESSAGES = frozenset(
    {
        "websocket.connect",
        "websocket.receive",
        "websocket.disconnect",
        "streamer.frame",
        "streamer.frames",
    }
)
#: How long an ``output`` frame waits for room in the socket's outbox (docs/protocol.md
#: §5: 1 MiB) before the client counts as not reading (close 4408). A request's output
#: comes as fast as its handler writes, and a replay sends up to 8 MiB at once: a client
#: that keeps reading takes all of it; other frames never wait.
OUTPUT_PATIENCE_S = 10.0


class StreamerConsumer(AsyncWebsocketConsumer):
    """One client socket."""

    session: Session | None = None
    outbox: Outbox | None = None
    _idle_handle: asyncio.TimerHandle | None = None
    _expiry_handle: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' ``AsyncConsumer.__call__`` with :func:`dispatch_loop` in place of
        its ``await_many_dispatch`` (see there why)."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
            sources.append(self.channel_receive)
        self.base_send = send
        with contextlib.suppress(StopConsumer):
            await dispatch_loop(sources, self.dispatch)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its database clean-up hop for the messages of
        :data:`NO_DATABASE_MESSAGES` (the other messages keep it)."""
        if message["type"] in NO_DATABASE_MESSAGES:
            await getattr(self, get_handler_name(message))(message)
        else:
            await super().dispatch(message)

    async def connect(self) -> None:
        scope = self.scope
        headers = asgi_headers(scope.get("headers", []))
        client = scope.get("client") or (None, None)
        try:
            self.session = await channels_edge.connect(
                extract_token(parse_query(scope.get("query_string", b"")), headers),
                connection_id=uuid.uuid4().hex,
                address=self.channel_name,
                user_agent=headers.get("user-agent", ""),
                source_ip=client[0],
            )
        except AuthFailure as failure:
            await self.accept()
            await self.close(code=failure.close_code, reason=failure.reason)
            return
        self.outbox = Outbox(
            self._send_text,
            limit=settings.STREAMER_MAX_OUTPUT_BYTES,
            on_overflow=self._slow_consumer,
            server_buffered=server_buffer_probe(self.scope),
        )
        await self.accept()
        self._last_activity = time.monotonic()
        self._schedule_idle_check(settings.STREAMER_IDLE_TIMEOUT_S)
        self._schedule_expiry_check()
        identity = self.session.identity
        await hub.register(
            Member(
                self.session.connection_id,
                identity.tenant_id,
                identity.user_id,
                self.streamer_frame,
            )
        )

    async def disconnect(self, code: int) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        if self.outbox is not None:
            self.outbox.close()
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
        if self.session is not None:
            session, self.session = self.session, None
            await hub.unregister(session.connection_id)
            await channels_edge.disconnect(session)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.session is None or self.outbox is None:
            return
        self._last_activity = time.monotonic()
        binary = text_data is None
        replies = await channels_edge.receive(
            self.session, text_data if not binary else bytes_data, binary=binary
        )
        for frame in replies:
            await self.outbox.put(codec.dumps_text(frame))

    async def streamer_frame(self, message: dict[str, Any]) -> bool:
        """A frame pushed to this socket from a worker, another process or the hub;
        whether anything went out for it."""
        if self.session is None or self.outbox is None:
            return False
        sent = False
        wait_s = OUTPUT_PATIENCE_S if message.get("seq") is not None else 0.0
        for text in channels_edge.admit(self.session, message):
            sent = await self.outbox.put(text, wait_s) or sent
        return sent

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
        close with 4408 (docs/protocol.md §1); it reconnects and resumes from storage."""
        SLOW_CONSUMERS.inc()
        log.info("closing slow consumer %s", self.session and self.session.connection_id)
        self._closing = asyncio.ensure_future(self.close(code=4408, reason="Slow consumer"))

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
        """Close with 4401 when the token expires (docs/protocol.md §1, 1.1), unless an
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


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """A socket to a path we do not serve (``/wsx``, ``/ws#token=...``): refused at the
    handshake (HTTP 403), quietly. Without it Channels' router raises "No route found for
    path ..." and the server logs that text, with whatever the path carries (a token)."""

    async def connect(self) -> None:
        await self.close()
