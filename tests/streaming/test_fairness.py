"""Fair scheduling (docs/protocol.md §5 1.1): a tenant holds at most its share of a worker's
slots, polls find other tenants' work behind its backlog, and the slots of one poll
go round-robin by tenant. moto for storage, real workers on this event loop, tenant
settings in the test database."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.db import OperationalError

from connections.tenants import TenantPolicy
from storage.requests.model import RequestRecord, RequestStatus
from storage.requests.store import RequestStore
from streaming.actions.registry import ActionRegistry, action
from streaming.fairness import interleave_by_tenant, lookup_share, share_for
from streaming.lifecycle import wake_worker
from streaming.worker import Worker
from tests.streaming.test_worker import RecordingStore, make_worker
from tests.support.worker import eventually, new_request_id, running, set_max_running

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")

S = RequestStatus
HOG, OTHER, THIRD = "hog", "acme", "initech"


@pytest.fixture
def rstore(store: RequestStore) -> RecordingStore:
    return RecordingStore()


def policy(max_running: int | None) -> TenantPolicy:
    return TenantPolicy(
        tenant_id=HOG,
        active=True,
        max_connections=0,
        rate_limit_frames=100,
        rate_limit_window_s=10,
        max_running=max_running,
    )


# --- the rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_running", "concurrency", "share"),
    [
        (None, 8, 4),  # default: half of the slots
        (None, 3, 2),  # rounded up
        (None, 1, 1),  # never less than one
        (0, 8, 4),  # an empty admin field means the default
        (1, 8, 1),
        (6, 8, 6),
        (50, 8, 8),  # capped at the worker's slots
    ],
)
def test_share_of_a_worker(max_running: int | None, concurrency: int, share: int) -> None:
    assert share_for(policy(max_running), concurrency) == share


def test_unknown_tenant_gets_the_default_share() -> None:
    assert share_for(None, 8) == 4


def test_share_falls_back_to_the_default_when_the_database_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def down(tenant_id: str) -> TenantPolicy | None:
        raise OperationalError("could not connect to server")

    assert lookup_share(HOG, 8, down) == 4
    assert "default share for hog" in caplog.text
    assert "could not connect" not in caplog.text


def record(tenant: str, n: int) -> RequestRecord:
    return RequestRecord(
        tenant_id=tenant,
        user_id="u",
        request_id=f"{tenant}-{n}",
        action="t.x",
        status=S.PENDING,
        payload={},
        metadata=None,
        percentage=0.0,
        message="",
        details=None,
        result=None,
        error=None,
        attempts=0,
        max_attempts=3,
        timeout_s=None,
        lease_owner=None,
        lease_expires_at=None,
        created_at=n,
        started_at=None,
        ended_at=None,
        connection_id="",
        origin_transport="",
        origin_address="",
    )


@pytest.mark.parametrize(
    ("order", "interleaved"),
    [
        ("", ""),
        ("aaa", "aaa"),
        ("aaab", "abaa"),
        ("aaabcb", "abcaba"),
        ("cba", "cba"),
    ],
)
def test_interleave_by_tenant(order: str, interleaved: str) -> None:
    records = [record(t, i) for i, t in enumerate(order)]
    result = interleave_by_tenant(records)
    assert "".join(r.tenant_id for r in result) == interleaved
    for tenant in set(order):  # each tenant's own order is kept
        mine = [r.request_id for r in result if r.tenant_id == tenant]
        assert mine == [r.request_id for r in records if r.tenant_id == tenant]


# --- workers -------------------------------------------------------------------------------


class Gate:
    """Handlers of ``t.hold`` run until the gate opens; ``t.quick`` returns at once."""

    def __init__(self, actions: ActionRegistry) -> None:
        self.open = threading.Event()

        @action("t.hold", mode="async", registry=actions)
        async def hold(job: Any, payload: dict[str, Any]) -> str:
            await asyncio.to_thread(self.open.wait, 30)
            return "held"

        @action("t.quick", mode="async", registry=actions)
        async def quick(job: Any, payload: dict[str, Any]) -> str:
            return "quick"


async def enqueue(
    store: RequestStore, tenant: str, action_name: str, *, user: str = "u", wake: bool = False
) -> RequestRecord:
    record = await asyncio.to_thread(
        store.enqueue,
        tenant_id=tenant,
        user_id=user,
        request_id=new_request_id(tenant),
        action=action_name,
        payload={},
        shards=1,
    )
    if wake:
        await wake_worker(record.key.as_string())
    return record


async def statuses(store: RequestStore, records: list[RequestRecord]) -> list[S]:
    return [(await asyncio.to_thread(store.get, r.key)).status for r in records]


@pytest.mark.parametrize(
    ("workers", "max_running", "wake", "hog_running"),
    [
        (1, None, True, 2),  # default share of 4 slots; the other tenant's wake-up starts it
        (1, None, False, 2),  # no wake-ups: the poll finds it behind the backlog
        (1, 1, False, 1),  # the tenant's own max_running (the admin)
        (1, 3, True, 3),
        (2, None, False, 4),  # two workers: the share is per worker
    ],
)
async def test_a_backlog_does_not_keep_another_tenant_waiting(
    rstore: RecordingStore,
    actions: ActionRegistry,
    workers: int,
    max_running: int | None,
    wake: bool,
    hog_running: int,
) -> None:
    gate = Gate(actions)
    if max_running is not None:
        await set_max_running(HOG, max_running)
    # More than two polls' worth (2 x free slots) of the hog's requests, all older.
    backlog = [await enqueue(rstore, HOG, "t.hold", user=f"u{i % 3}") for i in range(12)]
    pool = [
        make_worker(rstore, actions, concurrency=4, poll_interval_s=0.05) for _ in range(workers)
    ]
    async with running(*pool):

        async def hog_at_its_share() -> bool:
            return (await statuses(rstore, backlog)).count(S.PROCESSING) == hog_running

        await eventually(hog_at_its_share, what="the hog at its share")
        other = await enqueue(rstore, OTHER, "t.quick", wake=wake)

        async def other_done() -> bool:
            return (await statuses(rstore, [other]))[0] is S.COMPLETED

        await eventually(other_done, what="the other tenant's request complete")
        hog = await statuses(rstore, backlog)
        assert hog.count(S.PROCESSING) == hog_running, hog
        assert hog.count(S.PENDING) == len(backlog) - hog_running, hog
        gate.open.set()
    claimed = [r.key for r, _, _ in rstore.claims]
    assert len(claimed) == len(set(claimed)), "a request was claimed twice"


async def test_one_poll_shares_its_slots_round_robin(
    rstore: RecordingStore, actions: ActionRegistry
) -> None:
    """Even a tenant allowed every slot does not get all of one poll's slots while
    another tenant's requests are due: the poll takes them in turn."""
    gate = Gate(actions)
    await set_max_running(HOG, 4)
    hog = [await enqueue(rstore, HOG, "t.hold") for _ in range(6)]
    other = [await enqueue(rstore, OTHER, "t.hold") for _ in range(2)]
    worker = make_worker(rstore, actions, concurrency=4)
    try:
        assert await worker.poll_once() == 4
        assert (await statuses(rstore, hog)).count(S.PROCESSING) == 2
        assert await statuses(rstore, other) == [S.PROCESSING, S.PROCESSING]
        assert [r.tenant_id for r, _, _ in rstore.claims] == [HOG, OTHER, HOG, OTHER]
    finally:
        gate.open.set()
        await worker.shutdown()


async def test_a_slot_freed_by_a_tenant_at_its_share_goes_to_its_next_request(
    rstore: RecordingStore, actions: ActionRegistry
) -> None:
    """Its requests were left out of polls while it was at its share; when one ends the
    worker looks again at once (no waiting for the poll interval)."""
    done = asyncio.Event()

    @action("t.first", mode="async", registry=actions)
    async def first(job: Any, payload: dict[str, Any]) -> None:
        await done.wait()

    gate = Gate(actions)
    await set_max_running(HOG, 1)
    head = await enqueue(rstore, HOG, "t.first")
    rest = [await enqueue(rstore, HOG, "t.hold") for _ in range(2)]
    worker = make_worker(rstore, actions, concurrency=4, poll_interval_s=60)
    async with running(worker):
        await eventually(lambda: rstore.polls >= 2, what="the first poll")
        assert await statuses(rstore, [head, *rest]) == [S.PROCESSING, S.PENDING, S.PENDING]
        done.set()

        async def next_one_running() -> bool:
            return await statuses(rstore, [head, *rest]) == [S.COMPLETED, S.PROCESSING, S.PENDING]

        await eventually(next_one_running, what="the tenant's next request running")
        gate.open.set()


async def test_wake_ups_of_a_tenant_at_its_share_are_dropped_without_storage_work(
    rstore: RecordingStore, actions: ActionRegistry
) -> None:
    """A hostile tenant's flood of enqueues costs the worker no poll and no claim while
    that tenant is at its share, and the next tenant's wake-up still starts at once."""
    gate = Gate(actions)
    first = [await enqueue(rstore, HOG, "t.hold") for _ in range(2)]
    worker = make_worker(rstore, actions, concurrency=4, poll_interval_s=60)
    async with running(worker):

        async def settled() -> bool:
            return (await statuses(rstore, first)).count(S.PROCESSING) == 2 and rstore.polls >= 1

        await eventually(settled, what="the hog at its share")
        polls, claims = rstore.polls, len(rstore.claims)
        flood = [await enqueue(rstore, HOG, "t.hold", wake=True) for _ in range(10)]
        other = await enqueue(rstore, OTHER, "t.quick", wake=True)

        async def other_done() -> bool:
            return (await statuses(rstore, [other]))[0] is S.COMPLETED

        await eventually(other_done, what="the other tenant's request complete")
        assert rstore.polls == polls
        assert [r.tenant_id for r, _, _ in rstore.claims[claims:]] == [OTHER]
        assert set(await statuses(rstore, flood)) == {S.PENDING}
        gate.open.set()


async def test_policies_are_read_off_the_event_loop(
    rstore: RecordingStore, actions: ActionRegistry
) -> None:
    """The worker reads tenant settings (SQL) in a thread, never on its event loop."""
    loop_thread = threading.get_ident()
    readers: list[int] = []

    def policies(tenant_id: str) -> TenantPolicy | None:
        readers.append(threading.get_ident())
        return policy(1)

    gate = Gate(actions)
    backlog = [await enqueue(rstore, HOG, "t.hold") for _ in range(3)]
    worker = Worker(
        store=rstore, actions=actions, concurrency=4, shards=1, policies=policies, grace_s=5
    )
    try:
        assert await worker.poll_once() == 1
        assert (await statuses(rstore, backlog)).count(S.PROCESSING) == 1
        assert readers and loop_thread not in readers
    finally:
        gate.open.set()
        await worker.shutdown()
