"""Telling a user's watching connections (``request.watch``) about a new request: the
hook the places that enqueue a request call (see ``streaming/actions/watch.py``)."""

from __future__ import annotations

import logging
from typing import Any

from connections.manager import Target, manager, watch_key
from protocol import frames
from storage.errors import StoreError
from storage.requests.model import RequestRecord

log = logging.getLogger(__name__)


def announcement(record: RequestRecord) -> dict[str, Any]:
    """The acknowledgment a watcher gets for a request it did not start."""
    return frames.acknowledgment(record.request_id, action=record.action)


async def announce_request(record: RequestRecord, origin: Target | None = None) -> None:
    """Hook: ``record`` was just enqueued. Its user's watching connections, except the
    one that started it (it got its own acknowledgment), hear of it first. Never raises:
    the request is stored, and its later frames reach the watchers anyway."""
    try:
        watchers = await manager.subscribers(
            watch_key(record.tenant_id, record.user_id), fresh=True
        )
    except StoreError:
        log.warning("watchers of %s not told of request %s", record.user_id, record.request_id)
        return
    skip = origin.connection_id if origin is not None else None
    targets = [t for t in watchers if t.connection_id != skip]
    if targets:
        await manager.broadcast(targets, announcement(record))
