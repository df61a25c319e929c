"""The connection manager: push a frame to a connection, a user, a tenant, the
subscribers of a request, or a list of connections, wherever their sockets live.

Product code uses the module-level :data:`manager`::

    await manager.send_to_user("acme", "u-42", frames.response(None, {"hello": 1}))

The frame is encoded once per call; fan-out runs with bounded concurrency; a socket
that is gone (API Gateway 410) has its connection record and subscriptions removed.
Frames to a user or a tenant reach the sockets of our own servers through the fan-out
hub (:mod:`connections.hub`: no storage read, one layer message per server process);
storage is read only for the sockets of other transports (API Gateway), when one is
configured.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from prometheus_client import Counter

from connections.caches import expiring_cache
from connections.hub import hub
from connections.labels import BoundedLabels
from connections.storage_pool import run_storage
from connections.transports import (
    ConnectionGone,
    InvalidTransportError,
    TransportError,
    get_transport,
    transports,
)
from connections.transports.channels import frame_message
from protocol import codec
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound, StoreError
from storage.subscription import subscription_store

log = logging.getLogger(__name__)

SENDS = BoundedLabels(
    Counter(
        "streamer_sends_total", "Frames pushed to sockets by outcome", ["transport", "outcome"]
    ),
    lambda: settings.STREAMER_TRANSPORTS,  # a stored record names its transport
    ("delivered", "gone", "failed"),
)

#: The label of hub deliveries in ``streamer_sends_total``.
HUB_TRANSPORT = "channels"
SUBSCRIBER_CACHE_S = 1.0
#: Requests whose subscribers one manager caches at most (least recently used go).
MAX_CACHED_REQUESTS = 10_000


@dataclass(frozen=True)
class Target:
    """Where one socket is: enough to deliver without reading storage."""

    connection_id: str
    transport: str
    address: str

    @classmethod
    def of(cls, info: ConnectionInfo) -> Target:
        """The target of a stored connection."""
        return cls(info.connection_id, info.transport, info.address)


@dataclass
class SendReport:
    """What happened to one fan-out."""

    delivered: int = 0
    gone: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: The frame also went, through the shared channel layer, to the other server
    #: processes, which deliver it to their own sockets of the audience; those are not
    #: counted in ``delivered`` (this process cannot see them).
    relayed: bool = False


class ConnectionManager:
    """Delivers frames; safe to share between tasks of one event loop (its subscriber
    cache also between threads)."""

    def __init__(self, concurrency: int = 256) -> None:
        self.concurrency = concurrency
        # Read at each store, so a changed SUBSCRIBER_CACHE_S applies to new entries.
        self._subscribers = expiring_cache(MAX_CACHED_REQUESTS, lambda: SUBSCRIBER_CACHE_S)
        self._subscribers_lock = threading.Lock()  # the manager is shared across threads

    async def send_to_target(
        self, target: Target, frame: dict[str, Any], text: str | None = None
    ) -> str:
        """Deliver to one socket; returns "delivered", "gone" or "failed"."""
        text = codec.dumps_text(frame) if text is None else text
        return await self.send_many_to_target(target, [frame], [text])

    async def send_many_to_target(
        self, target: Target, frames: list[dict[str, Any]], texts: list[str]
    ) -> str:
        """Deliver encoded frames to one socket in order (batched where the transport
        can); returns "delivered", "gone" or "failed"."""
        transport = get_transport(target.transport)
        try:
            if len(frames) == 1:
                await transport.send(target.address, frames[0], texts[0])
            else:
                await transport.send_many(target.address, frames, texts)
        except ConnectionGone:
            SENDS.labels(target.transport, "gone").inc()
            await self.forget(target.connection_id)
            return "gone"
        except TransportError as exc:
            SENDS.labels(target.transport, "failed").inc()
            log.warning("send to %s failed: %s", target.connection_id, exc)
            return "failed"
        SENDS.labels(target.transport, "delivered").inc()
        return "delivered"

    async def send(
        self, connection_id: str, frame: dict[str, Any], *, record: ConnectionInfo | None = None
    ) -> bool:
        """Send to one connection; reads its record only when the caller has none."""
        if record is None:
            try:
                record = await run_storage(connection_store.get, connection_id)
            except NotFound:
                return False
        return await self.send_to_target(Target.of(record), frame) == "delivered"

    async def send_to_user(self, tenant_id: str, user_id: str, frame: dict[str, Any]) -> SendReport:
        """Send to every connection of one user: the hub for our servers' sockets, one
        index query for those of other transports."""
        return await self._send_to_audience(tenant_id, user_id, frame)

    async def send_to_tenant(self, tenant_id: str, frame: dict[str, Any]) -> SendReport:
        """Send to every connection of a tenant: the hub for our servers' sockets, an
        index query (paged) for those of other transports."""
        return await self._send_to_audience(tenant_id, None, frame)

    async def _send_to_audience(
        self, tenant_id: str, user_id: str | None, frame: dict[str, Any]
    ) -> SendReport:
        """Hub first (this process's sockets at once, one relay for the others), then the
        stored sockets of transports the hub does not serve."""
        text = codec.dumps_text(frame)
        by_hub = await hub.send(tenant_id, user_id, frame_message(frame, text))
        SENDS.labels(HUB_TRANSPORT, "delivered").inc(by_hub.delivered)
        elsewhere = stored_transports()
        report = SendReport()
        if elsewhere:

            def query() -> list[ConnectionInfo]:
                found = (
                    connection_store.iter_by_tenant(tenant_id, elsewhere)
                    if user_id is None
                    else connection_store.iter_by_user(tenant_id, user_id, elsewhere)
                )
                return list(found)

            infos = await run_storage(query)
            report = await self.broadcast([Target.of(i) for i in infos], frame, text=text)
        report.delivered += by_hub.delivered
        report.relayed = by_hub.relayed
        return report

    async def broadcast(
        self, targets: Iterable[Target | str], frame: dict[str, Any], *, text: str | None = None
    ) -> SendReport:
        """Send one frame to many sockets, at most ``concurrency`` at a time."""
        text = codec.dumps_text(frame) if text is None else text
        resolved: list[Target] = []
        for target in targets:
            if isinstance(target, str):
                try:
                    info = await run_storage(connection_store.get, target)
                except NotFound:
                    continue
                target = Target.of(info)
            resolved.append(target)
        report = SendReport()
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(target: Target) -> None:
            async with semaphore:
                outcome = await self.send_to_target(target, frame, text)
            if outcome == "delivered":
                report.delivered += 1
            elif outcome == "gone":
                report.gone.append(target.connection_id)
            else:
                report.failed.append(target.connection_id)

        await asyncio.gather(*(one(t) for t in resolved))
        return report

    async def send_to_request(
        self,
        request_key: str,
        frame: dict[str, Any],
        *,
        origin: Target | None = None,
        fresh: bool = False,
    ) -> SendReport:
        """Send a frame about a request to its sender and every subscribed connection.

        Subscribers are cached for a second (progress frames); ``fresh`` re-reads them,
        which terminal frames do so that a late subscriber still gets the end.
        """
        targets = await self.subscribers(request_key, fresh=fresh)
        if origin is not None and all(t.connection_id != origin.connection_id for t in targets):
            targets = [origin, *targets]
        return await self.broadcast(targets, frame)

    async def subscribers(self, request_key: str, *, fresh: bool = False) -> list[Target]:
        """The targets subscribed to a request (cached for SUBSCRIBER_CACHE_S)."""
        if not fresh:
            with self._subscribers_lock:
                hit: list[Target] | None = self._subscribers.get(request_key)
            if hit is not None:
                return hit
        subs = await run_storage(subscription_store.list_by_request, request_key)
        targets = [Target(s.connection_id, s.transport, s.address) for s in subs]
        with self._subscribers_lock:
            self._subscribers[request_key] = targets
        return targets

    async def disconnect(
        self,
        connection_id: str,
        code: int = 1000,
        reason: str = "",
        *,
        record: ConnectionInfo | None = None,
    ) -> bool:
        """Close a connection's socket wherever it is; False when it is not registered or
        its transport failed. Reads the record only when the caller has none."""
        if record is None:
            try:
                record = await run_storage(connection_store.get, connection_id)
            except NotFound:
                return False
        try:
            await get_transport(record.transport).close(record.address, code, reason)
        except ConnectionGone:
            await self.forget(connection_id)
        except TransportError as exc:
            log.warning("disconnect of %s failed: %s", connection_id, exc)
            return False
        return True

    async def forget(self, connection_id: str, *, at: tuple[str, str] | None = None) -> None:
        """Remove a dead connection's record and subscriptions (best effort: when storage
        fails, ``cleanup_connections`` removes them later; a fan-out is never aborted).
        With ``at=(transport, address)``, only if the record is that one (see
        ``ConnectionStore.delete``): a transport's event never removes another's socket."""

        def _forget() -> None:
            if connection_store.delete(connection_id, at=at) or at is None:
                subscription_store.delete_by_connection(connection_id)

        try:
            await run_storage(_forget)
        except StoreError as exc:
            log.warning("could not forget connection %s: %s", connection_id, exc)


def stored_transports() -> list[str]:
    """The configured transports whose sockets a fan-out finds in storage (the others
    register with the hub)."""
    return [name for name in transports.names() if not _through_hub(name)]


def _through_hub(name: str) -> bool:
    try:
        return get_transport(name).through_hub
    except InvalidTransportError:
        return False  # sending to its stored sockets reports the failure, as before


manager = ConnectionManager()
