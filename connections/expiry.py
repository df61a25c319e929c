"""Closing connections whose token expired (docs/protocol.md §1, 1.1: close 4401).

Our own consumer closes its sockets with a timer; an API Gateway socket has no process
holding it, so the scheduled sweep (``lambda_handlers.sweep``) and
``cleanup_connections`` call :func:`close_expired`: it finds expired connections in the
sparse ``by_expiry`` index (no scan), closes each where it lives (API Gateway:
``DeleteConnection``, which cannot carry a close code; Channels: close 4401) and
removes its record and subscriptions.
"""

from __future__ import annotations

import logging

from connections.manager import manager
from connections.storage_pool import run_storage
from connections.transports import ConnectionGone, TransportError, get_transport
from storage.base import now_ms
from storage.connection import connection_store

log = logging.getLogger(__name__)

EXPIRED_CODE = 4401
EXPIRED_REASON = "Token expired"


async def close_expired(leeway_ms: int = 0) -> int:
    """Close every connection whose token expired more than ``leeway_ms`` ago; returns
    how many were closed. A transport failure is logged and the record still removed
    (its socket is unusable past the token's expiry anyway)."""
    expired = await run_storage(lambda: list(connection_store.iter_expired(now_ms() - leeway_ms)))
    for connection_id, transport, address in expired:
        await close_one(connection_id, transport, address)
    return len(expired)


async def close_one(connection_id: str, transport: str, address: str) -> None:
    """Close one connection whose token expired and forget its record (best effort)."""
    try:
        await get_transport(transport).close(address, EXPIRED_CODE, EXPIRED_REASON)
    except ConnectionGone:
        pass
    except TransportError as exc:
        log.warning("could not close expired connection %s: %s", connection_id, exc)
    await manager.forget(connection_id)
