"""Users' connection counts after their registrations, gathered per tenant.

The per-user cap (:mod:`streaming.user_cap`) counts a user's connections after each
connect's write. One ``by_user`` count per connect was the largest cost of a reconnect
storm: measured with ``python -m bench.storm`` (5,000 fresh users of one tenant, one
uvicorn process, 2026-11-28), 5,000 counts took 6 s of the server's CPU and 3 s of
dynalite's; the storm lasted 17 s instead of 11 s without them. A count costs about
0.7 ms of client CPU and 1.3 ms of wall time; one ``by_tenant`` query projecting only
``owner`` reads 5,000 rows in about 16 ms of CPU and 75 ms (``count_owners``).

So counts of one tenant are gathered: while a tenant's counts are in flight, the next
ones wait, and the waiting ones leave together. A small batch is counted user by user
(concurrently, as before: a lone connect is not delayed); a batch of at least
:data:`TENANT_QUERY_MIN_USERS` users is answered by one tenant query when the tenant
holds at most :data:`ROWS_PER_USER` rows per waiting user (otherwise user by user).

Every count still starts after the write of each connect it answers (a count is
enqueued only once its connect's record is stored), which is all the cap's argument
needs (:mod:`streaming.user_cap`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from connections.per_loop import PerLoop
from connections.storage_pool import run_storage
from storage.base import owner_of
from storage.connection import connection_store

#: Waiting users of one tenant from which one tenant query may answer them all.
TENANT_QUERY_MIN_USERS = 16
#: Rows a tenant query may read per user it answers (a user count costs about what a
#: tenant query reading 50–100 rows costs; see the module docstring).
ROWS_PER_USER = 50

_Waiters = dict[str, list["asyncio.Future[int]"]]


@dataclass
class _LoopState:
    """The counts waiting and in flight on one event loop."""

    waiting: defaultdict[str, _Waiters] = field(default_factory=lambda: defaultdict(dict))
    running: set[str] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class UserCounts:
    """Counts users' connections, gathering the counts of one tenant (see the module
    docstring). One state per event loop, like the registrations' batcher."""

    def __init__(
        self, min_users: int = TENANT_QUERY_MIN_USERS, rows_per_user: int = ROWS_PER_USER
    ) -> None:
        self.min_users = min_users
        self.rows_per_user = rows_per_user
        self._loops = PerLoop(_LoopState)

    async def count(self, tenant_id: str, user_id: str) -> int:
        """The user's connections, counted by a query that starts after this call;
        raises what the storage call raised (``StorageUnavailable``)."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        future: asyncio.Future[int] = loop.create_future()
        state.waiting[tenant_id].setdefault(user_id, []).append(future)
        if tenant_id not in state.running:
            state.running.add(tenant_id)
            task = loop.create_task(self._drain(state, tenant_id))
            state.tasks.add(task)
            task.add_done_callback(state.tasks.discard)
        return await future

    async def _drain(self, state: _LoopState, tenant_id: str) -> None:
        """Answer the tenant's waiting counts, batch after batch, until none waits."""
        try:
            while waiters := state.waiting.pop(tenant_id, None):
                await self._answer(tenant_id, waiters)
        finally:
            state.running.discard(tenant_id)

    async def _answer(self, tenant_id: str, waiters: _Waiters) -> None:
        counts: dict[str, int] | None = None
        try:
            if len(waiters) >= self.min_users:
                owners = await run_storage(
                    connection_store.count_owners, tenant_id, len(waiters) * self.rows_per_user
                )
                if owners is not None:
                    counts = {u: owners.get(owner_of(tenant_id, u), 0) for u in waiters}
        except Exception as exc:  # every waiter gets the storage error
            _fail(waiters.values(), exc)
            return
        if counts is not None:
            for user, futures in waiters.items():
                _settle(futures, counts[user])
            return
        results = await asyncio.gather(
            *(run_storage(connection_store.count_by_user, tenant_id, u) for u in waiters),
            return_exceptions=True,
        )
        for futures, result in zip(waiters.values(), results, strict=True):
            if isinstance(result, BaseException):
                _fail([futures], result)
            else:
                _settle(futures, result)


def _settle(futures: list[asyncio.Future[int]], count: int) -> None:
    for future in futures:
        if not future.done():
            future.set_result(count)


def _fail(groups: Iterable[list[asyncio.Future[int]]], exc: BaseException) -> None:
    for futures in groups:
        for future in futures:
            if not future.done():
                future.set_exception(exc)


user_counts = UserCounts()
