"""Server-side publishing: what product code pushes to users that is not about a
request (a notification, a refresh hint). Used by ``manage.py send_message`` and
``POST /api/v1/publish``.

A process outside the servers (a management command) cannot reach their sockets
through a process-local channel layer (no Redis): :func:`out_of_reach` names those
connections, and ``publish(..., refuse_out_of_reach=True)`` refuses before sending
anything rather than report a delivery that cannot happen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connections.layers import reaches
from connections.manager import SendReport, manager
from connections.storage_pool import run_storage
from connections.transports import InvalidTransportError, get_transport
from protocol import codec
from protocol.frames import now_ms
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound

# Types that belong to the request lifecycle: publishers cannot forge them.
RESERVED_TYPES = frozenset({"response", "acknowledgment", "progress", "complete", "error", "pong"})
MAX_FRAME_BYTES = 128 * 1024


class PublishError(ValueError):
    """The frame or target is not acceptable; the message is safe to show."""


class OutOfReach(PublishError):
    """Some sockets are held by a server this process cannot reach: nothing was sent."""

    def __init__(self, count: int) -> None:
        super().__init__(
            f"{count} connection(s) are held by a server process this process cannot reach "
            "(the channel layer is in-memory: REDIS_URL is not set)"
        )
        self.count = count


@dataclass(frozen=True)
class Audience:
    """Exactly one of: a connection, a user of a tenant, or a whole tenant."""

    tenant_id: str
    connection_id: str | None = None
    user_id: str | None = None


def build_frame(body: Any) -> dict[str, Any]:
    """A publishable frame: an object whose ``type`` (default ``message``) is not a
    request-lifecycle type; ``timestamp`` is set by the server."""
    if not isinstance(body, dict):
        raise PublishError("frame must be a JSON object")
    frame = dict(body)
    kind = frame.setdefault("type", "message")
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise PublishError("frame type must be a short string")
    if kind in RESERVED_TYPES:
        raise PublishError(f"frame type {kind!r} is reserved")
    frame.pop("request_id", None)
    frame["timestamp"] = now_ms()
    if len(codec.dumps(frame)) > MAX_FRAME_BYTES:
        raise PublishError("frame larger than 128 KiB")
    return frame


async def audience_connections(audience: Audience) -> list[ConnectionInfo]:
    """The stored connections of ``audience``; a connection of another tenant is not
    part of it."""
    if audience.connection_id:
        try:
            info = await run_storage(connection_store.get, audience.connection_id)
        except NotFound:
            return []
        return [info] if info.tenant_id == audience.tenant_id else []
    if audience.user_id:
        user_id = audience.user_id
        return await run_storage(
            lambda: list(connection_store.iter_by_user(audience.tenant_id, user_id))
        )
    return await run_storage(lambda: list(connection_store.iter_by_tenant(audience.tenant_id)))


def out_of_reach(infos: list[ConnectionInfo]) -> list[ConnectionInfo]:
    """The connections whose sockets this process cannot reach: sockets of another
    process behind a process-local channel layer (``connections/layers.py``). Sockets
    behind a shared layer (Redis) or API Gateway are always in reach."""
    unreachable = []
    for info in infos:
        try:
            alias = getattr(get_transport(info.transport), "layer_alias", None)
        except InvalidTransportError:
            continue  # no transport at all: sending to it reports the failure
        if alias is not None and not reaches(info.address, alias):
            unreachable.append(info)
    return unreachable


async def publish(
    audience: Audience, frame: dict[str, Any], *, refuse_out_of_reach: bool = False
) -> SendReport:
    """Send ``frame`` to ``audience``; a connection of another tenant is not reached.

    With ``refuse_out_of_reach`` (callers outside the servers), :class:`OutOfReach` is
    raised before anything is sent when any of the sockets is out of reach.

    A user or a tenant is reached through the fan-out hub: ``delivered`` counts the
    sockets of this process and of other transports (API Gateway); ``relayed`` says the
    frame also went to every other server process, which delivers it to its own sockets
    of the audience (not counted here).
    """
    if audience.connection_id or refuse_out_of_reach:
        infos = await audience_connections(audience)
        if refuse_out_of_reach and (unreachable := out_of_reach(infos)):
            raise OutOfReach(len(unreachable))
    if audience.connection_id:
        report = SendReport()
        for info in infos:
            if await manager.send(info.connection_id, frame, record=info):
                report.delivered += 1
            else:
                report.failed.append(info.connection_id)
        return report
    if audience.user_id:
        return await manager.send_to_user(audience.tenant_id, audience.user_id, frame)
    return await manager.send_to_tenant(audience.tenant_id, frame)
