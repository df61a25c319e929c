"""docs/protocol.md §5 "connections per user": at most ``limit`` connections per user,
across every server process, with one DynamoDB write per connect.

A connect registers its connection (the one write) and then counts the user's
connections (``by_user`` index, Select=COUNT): if the count passes the limit it removes
its own record and is refused. A user this process refused lately (within
``FULL_MEMORY_S``) is counted first as well and refused at once, writing nothing, when
already at the limit; a fresh user is not (during a reconnect storm nearly every
connect is a fresh user's, and that count could only say "room"). So an accepted
connect costs one write and one count; the first refused connect of a user on a
process, a write, a count and the removal; later ones while remembered, one count.

Why concurrent connects cannot end above the limit: take the connects that stay and
the one among them that registered last. Every other one that stays registered before
it, so its second count (made after its own write) includes all of them; it stayed, so
that count was at most ``limit``. Simultaneous connects for the last slot may all see
each other and all be refused: the rule errs towards refusing, never towards
admitting.

Index lag: the argument needs the count to see every earlier write. The embedded
server and moto update indexes synchronously; on DynamoDB a global secondary index is
eventually consistent (typically well under a second behind). Connects landing within
that lag of each other may then miss one another and briefly exceed the limit by the
number of such racers; nothing re-admits them later, and each disconnect frees a slot
as usual.
"""

from __future__ import annotations

import logging
import threading

from cachetools import TTLCache

from connections.storage_pool import run_storage
from connections.user_counts import user_counts
from storage.connection import connection_store
from storage.errors import StorageUnavailable
from streaming.auth import TOO_MANY_CONNECTIONS, AuthFailure, Identity

log = logging.getLogger(__name__)

#: How long a refused user is counted before its connects' writes.
FULL_MEMORY_S = 60.0
_full: TTLCache[tuple[str, str], None] = TTLCache(maxsize=10_000, ttl=FULL_MEMORY_S)
_full_lock = threading.Lock()


def _key(identity: Identity) -> tuple[str, str]:
    return identity.tenant_id, identity.user_id


def forget_full_users() -> None:
    """Forget every refused user (their next connects are not counted first)."""
    with _full_lock:
        _full.clear()


def _remember_full(identity: Identity) -> None:
    with _full_lock:
        _full[_key(identity)] = None


def _refuse() -> AuthFailure:
    return AuthFailure(TOO_MANY_CONNECTIONS, "Too many connections")


async def check_room(identity: Identity, limit: int) -> None:
    """Refuse (4429) before any write when this process refused the user lately and
    the user still has ``limit`` connections; a fresh user is not counted here
    (:func:`confirm` decides, see the module docstring)."""
    with _full_lock:
        if _key(identity) not in _full:
            return
    count = await run_storage(connection_store.count_by_user, identity.tenant_id, identity.user_id)
    if count >= limit:
        raise _refuse()


async def confirm(identity: Identity, connection_id: str, limit: int) -> None:
    """After registering ``connection_id``: refuse (4429) and remove it when the user's
    count now passes ``limit`` (see the module docstring for why this holds)."""
    try:
        count = await user_counts.count(identity.tenant_id, identity.user_id)
    except StorageUnavailable:
        await _forget(connection_id)  # a refused connect must not hold a slot
        raise
    if count > limit:
        _remember_full(identity)
        await _forget(connection_id)
        raise _refuse()


async def _forget(connection_id: str) -> None:
    try:
        await run_storage(connection_store.delete, connection_id)
    except StorageUnavailable:
        log.warning("could not remove refused connection %s", connection_id)
