"""``request.watch`` (docs/protocol.md §3, 1.1): a connection that asks receives the frames of
every request of its user, however the request was started (another tab, server code,
the HTTP jobs API). How watchers are kept and reached: :mod:`streaming.watchers`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool

from connections.manager import manager
from connections.storage_pool import run_storage
from storage.requests.model import FINAL
from storage.requests.store import request_store
from storage.subscription import subscription_store
from streaming.actions.registry import ActionContext, action
from streaming.session import Session
from streaming.watchers import announcement, subscribe_all, watch_key

#: Newest requests of the user looked at for running ones when watching starts (the
#: per-user quota of active requests is far below this).
LIVE_SCAN = 100


class WatchPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    enabled: StrictBool = True


@action("request.watch", schema=WatchPayload)
async def request_watch(ctx: ActionContext, payload: WatchPayload) -> dict[str, Any]:
    """Start (or with ``enabled: false`` stop) receiving every request of this user.
    Answers ``{"watching", "requests"}``: the ids of the running requests it now follows
    (each also announced by an acknowledgment with its ``action``)."""
    session = ctx.session
    key = watch_key(ctx.tenant_id, ctx.user_id)
    if not payload.enabled:
        await run_storage(_stop_watching, session, key)
        return {"watching": False, "requests": []}
    await run_storage(
        subscription_store.subscribe, key, session.connection_id, session.transport, session.address
    )
    session.subscriptions.add(key)
    session.watched = True
    page = await run_storage(
        request_store.list_by_user, ctx.tenant_id, ctx.user_id, limit=LIVE_SCAN
    )
    live = [r for r in reversed(page.items) if r.status not in FINAL]  # oldest first
    await asyncio.gather(
        *(run_storage(subscribe_all, r.key.as_string(), [session.target]) for r in live)
    )
    for record in live:
        await manager.send_to_target(session.target, announcement(record))
    return {"watching": True, "requests": [r.request_id for r in live]}


def _stop_watching(session: Session, key: str) -> None:
    """Drop the watch and every subscription watching made (those written by other
    processes too); keep the ones the client asked for with ``request.status``."""
    session.subscriptions.discard(key)
    mine = [s.request_key for s in subscription_store.list_by_connection(session.connection_id)]
    subscription_store.delete_many(
        session.connection_id, [k for k in mine if k not in session.subscriptions]
    )
