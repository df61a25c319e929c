"""The edge every client socket passes, whichever transport holds it: the Channels
consumer (our daphne/uvicorn servers) and the API Gateway event handlers.

Both authenticate and open a session the same way, answer frames with the one
pipeline, write ``last_seen`` at most every ``STREAMER_TOUCH_INTERVAL_S``, count
connects and frames out in the same metrics, and give the tenant's connection count
back on close. What differs stays with the transport: timers (idle, token expiry) and
backpressure exist only where we hold the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from django.conf import settings

from connections.storage_pool import run_storage
from storage.connection import connection_store
from storage.errors import StoreError
from streaming.auth import AuthFailure, verify_token
from streaming.metrics import CONNECTIONS, CONNECTS, FRAMES_OUT
from streaming.pipeline import get_pipeline
from streaming.session import Session, close_session, open_session, tenant_counts

log = logging.getLogger(__name__)


class Edge:
    """One transport's side of a connection's life (see the module docstring).

    ``background_touch``: the ``last_seen`` write runs beside the frame instead of before
    its answer. Only where the event loop outlives the frame (our servers); a Lambda
    invocation ends its loop with the event, which would cut the write off.
    """

    def __init__(self, transport: str, *, background_touch: bool) -> None:
        self.transport = transport
        self.background_touch = background_touch
        self._touching: set[asyncio.Task[None]] = set()

    async def connect(
        self,
        token: str | None,
        *,
        connection_id: str,
        address: str,
        user_agent: str = "",
        source_ip: str | None = None,
    ) -> Session:
        """Verify ``token`` and open the session (tenant, connection limits, one write).
        Raises AuthFailure with the close code to use; every outcome is counted in
        ``streamer_connects_total``."""
        try:
            session = await open_session(
                verify_token(token),
                connection_id=connection_id,
                transport=self.transport,
                address=address,
                user_agent=user_agent,
                source_ip=source_ip,
            )
        except AuthFailure as failure:
            CONNECTS.labels(str(failure.close_code)).inc()
            raise
        CONNECTS.labels("accepted").inc()
        CONNECTIONS.inc()
        session.opened_here = True
        return session

    async def receive(
        self, session: Session, data: str | bytes | None, *, binary: bool = False
    ) -> list[dict[str, Any]]:
        """The frames answering one client frame (never raises: errors are frames)."""
        await self._touch_if_due(session)
        replies = await get_pipeline().handle(session, data, binary=binary)
        for frame in replies:
            FRAMES_OUT.labels(frame["type"]).inc()
        return replies

    def admit(self, session: Session, message: dict[str, Any]) -> list[str]:
        """The texts that may go out on this connection now for a frame pushed from
        elsewhere (a worker, a publish): progress never goes down, output in seq order
        (held behind a replay), nothing after the terminal frame; each counted."""
        texts = session.guard.admit(message)
        for _ in texts:
            FRAMES_OUT.labels(message.get("frame_type") or "other").inc()
        return texts

    async def disconnect(self, session: Session) -> None:
        """The socket closed: give the tenant's connection count back and delete the
        connection and the subscriptions this session made."""
        self.forgotten(session)
        await close_session(session)

    def forgotten(self, session: Session) -> None:
        """The socket closed and the caller removes its records itself (API Gateway
        removes every subscription, made through any container): only the counts, and
        only once, by the process that counted the connect."""
        if not session.opened_here:
            return
        session.opened_here = False
        CONNECTIONS.dec()
        tenant_counts.bump(session.identity.tenant_id, -1)

    async def _touch_if_due(self, session: Session) -> None:
        """Record liveness (``last_seen``, which ``cleanup_connections`` relies on) at
        most once per STREAMER_TOUCH_INTERVAL_S, on client activity."""
        now = time.monotonic()
        if now - session.last_touch < settings.STREAMER_TOUCH_INTERVAL_S:
            return
        session.last_touch = now
        if not self.background_touch:
            await _touch(session.connection_id)
            return
        task = asyncio.ensure_future(_touch(session.connection_id))
        self._touching.add(task)
        task.add_done_callback(self._touching.discard)


async def _touch(connection_id: str) -> None:
    try:
        await run_storage(connection_store.touch, connection_id)
    except StoreError:
        log.debug("could not record last_seen of %s", connection_id)


#: Sockets our own servers hold (``streaming.consumer``).
channels_edge = Edge("channels", background_touch=True)
#: Sockets API Gateway holds (``streaming.apigw``).
apigw_edge = Edge("apigw", background_touch=False)
