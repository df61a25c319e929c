"""docs/protocol.md §5 "connections per user": at most ``limit`` connections per user,
across every server process, with one DynamoDB write per connect.

A connect first counts the user's connections (``by_user`` index, Select=COUNT) and is
refused at once, writing nothing, when the user is already at the limit. Otherwise it
registers its connection (the one write) and counts again: if the count now passes
the limit it removes its own record and is refused.

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

from connections.storage_pool import run_storage
from storage.connection import connection_store
from storage.errors import StorageUnavailable
from streaming.auth import TOO_MANY_CONNECTIONS, AuthFailure, Identity

log = logging.getLogger(__name__)


def _refuse() -> AuthFailure:
    return AuthFailure(TOO_MANY_CONNECTIONS, "Too many connections")


async def check_room(identity: Identity, limit: int) -> None:
    """Refuse (4429) before any write when the user already has ``limit`` connections."""
    count = await run_storage(connection_store.count_by_user, identity.tenant_id, identity.user_id)
    if count >= limit:
        raise _refuse()


async def confirm(identity: Identity, connection_id: str, limit: int) -> None:
    """After registering ``connection_id``: refuse (4429) and remove it when the user's
    count now passes ``limit`` (see the module docstring for why this holds)."""
    try:
        count = await run_storage(
            connection_store.count_by_user, identity.tenant_id, identity.user_id
        )
    except StorageUnavailable:
        await _forget(connection_id)  # a refused connect must not hold a slot
        raise
    if count > limit:
        await _forget(connection_id)
        raise _refuse()


async def _forget(connection_id: str) -> None:
    try:
        await run_storage(connection_store.delete, connection_id)
    except StorageUnavailable:
        log.warning("could not remove refused connection %s", connection_id)
