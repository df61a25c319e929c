"""``request.watch`` (PROTOCOL.md §3, 1.1): a connection that asks receives the frames of
every request of its user, however the request was started (another tab, server code,
the HTTP jobs API).

A watching connection is a subscription under the user's watch key
(:func:`connections.manager.watch_key`) in the subscription store, so it works across
processes and on both transports: ``manager.send_to_request`` sends every request
frame to the user's watchers too, and the subscription goes away with the connection.
A watcher first hears of a request through an ``acknowledgment`` that carries
``action``: :func:`announce_request` sends it when a request is enqueued, and turning
watching on sends one for each request of the user still running
(:mod:`streaming.watchers`). Watching is
subscribed *before* that list is read, so a request enqueued meanwhile is announced
either way; the connection's DeliveryGuard drops the second acknowledgment.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool

from connections.manager import manager, watch_key
from connections.storage_pool import run_storage
from storage.requests.model import FINAL
from storage.requests.store import request_store
from storage.subscription import subscription_store
from streaming.actions.registry import action
from streaming.pipeline import ActionContext
from streaming.watchers import announcement

#: Newest requests of the user looked at for running ones when watching starts (the
#: per-user quota of active requests is far below this).
LIVE_SCAN = 100


class WatchPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    enabled: StrictBool = True


@action("request.watch", schema=WatchPayload)
async def request_watch(ctx: ActionContext, payload: WatchPayload) -> dict[str, Any]:
    """Start (or with ``enabled: false`` stop) receiving every request of this user."""
    session = ctx.session
    key = watch_key(ctx.tenant_id, ctx.user_id)
    if not payload.enabled:
        await run_storage(subscription_store.unsubscribe, key, session.connection_id)
        session.subscriptions.discard(key)
        return {"watching": False, "requests": []}
    await run_storage(
        subscription_store.subscribe, key, session.connection_id, session.transport, session.address
    )
    session.subscriptions.add(key)
    page = await run_storage(
        request_store.list_by_user, ctx.tenant_id, ctx.user_id, limit=LIVE_SCAN
    )
    live = [r for r in reversed(page.items) if r.status not in FINAL]  # oldest first
    for record in live:
        await manager.send_to_target(session.target, announcement(record))
    return {"watching": True, "requests": [r.request_id for r in live]}
