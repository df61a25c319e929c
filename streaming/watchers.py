"""Who watches a user's requests (``request.watch``) and how a new request reaches them.

A watching connection is a subscription under the user's *watch key* in the
subscription store, so it is seen by every process and works on both transports. A
watcher receives a request's frames the way any subscriber does: it is subscribed to
that request. Two moments do that, so that no request falls between them:

* :func:`announce_request`, called when a request is enqueued (before a worker is
  woken): one Query for the user's watchers, then each one except the connection that
  started it is subscribed to the request and gets an ``acknowledgment`` that carries
  ``action``;
* ``request.watch`` itself (streaming/actions/watch.py): the connection registers under
  the watch key *first*, then subscribes itself to each of the user's requests still
  running and gets their acknowledgments. A request enqueued meanwhile may be announced
  both ways; the connection's DeliveryGuard lets one acknowledgment through.

Frames then go out through ``manager.send_to_request`` unchanged (one Query of the
request's subscribers). A watcher's subscriptions may be written by other processes, so
a watching session deletes all of its subscriptions when it closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from connections.manager import Target, manager
from protocol import frames
from storage.base import owner_of
from storage.errors import StoreError
from storage.requests.model import RequestRecord
from storage.subscription import subscription_store

log = logging.getLogger(__name__)


def watch_key(tenant_id: str, user_id: str) -> str:
    """The subscription key of a user's watching connections. It cannot be a request's
    key: those start with the tenant id, a slug, never with ``~``."""
    return f"~watch#{owner_of(tenant_id, user_id)}"


def announcement(record: RequestRecord) -> dict[str, Any]:
    """The acknowledgment a watcher gets for a request it did not start."""
    return frames.acknowledgment(record.request_id, action=record.action)


def subscribe_all(request_key: str, targets: list[Target]) -> None:
    """Subscribe each target to a request (one PutItem each; idempotent)."""
    for target in targets:
        subscription_store.subscribe(
            request_key, target.connection_id, target.transport, target.address
        )


async def announce_request(record: RequestRecord, origin: Target | None = None) -> None:
    """Hook: ``record`` was just enqueued. Its user's watching connections, except the
    one that started it (it got its own acknowledgment), are subscribed to it and hear
    of it. Never raises: the request is stored whatever happens here."""
    try:
        watchers = await manager.subscribers(
            watch_key(record.tenant_id, record.user_id), fresh=True
        )
        skip = origin.connection_id if origin is not None else None
        targets = [t for t in watchers if t.connection_id != skip]
        if not targets:
            return
        await asyncio.to_thread(subscribe_all, record.key.as_string(), targets)
    except StoreError:
        log.warning("watchers of %s not told of request %s", record.user_id, record.request_id)
        return
    await manager.broadcast(targets, announcement(record))
