"""Server-side publishing: what product code pushes to users that is not about a
request (a notification, a refresh hint). Used by ``manage.py send_message`` and
``POST /api/v1/publish``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connections.manager import SendReport, manager
from connections.storage_pool import run_storage
from protocol import codec
from protocol.frames import now_ms
from storage.connection import connection_store
from storage.errors import NotFound

# Types that belong to the request lifecycle: publishers cannot forge them.
RESERVED_TYPES = frozenset({"response", "acknowledgment", "progress", "complete", "error", "pong"})
MAX_FRAME_BYTES = 128 * 1024


class PublishError(ValueError):
    """The frame or target is not acceptable; the message is safe to show."""


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


async def publish(audience: Audience, frame: dict[str, Any]) -> SendReport:
    """Send ``frame`` to ``audience``; a connection of another tenant is not reached."""
    if audience.connection_id:
        try:
            info = await run_storage(connection_store.get, audience.connection_id)
        except NotFound:
            return SendReport()
        if info.tenant_id != audience.tenant_id:
            return SendReport()
        report = SendReport()
        delivered = await manager.send(info.connection_id, frame, record=info)
        report.delivered = int(delivered)
        if not delivered:
            report.failed.append(info.connection_id)
        return report
    if audience.user_id:
        return await manager.send_to_user(audience.tenant_id, audience.user_id, frame)
    return await manager.send_to_tenant(audience.tenant_id, frame)
