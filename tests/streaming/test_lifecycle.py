"""streaming/lifecycle.py: enqueue without a socket, the shard count from settings, the
record TTL from settings, progress rates from settings (Worker.from_settings), the
sender of a request (origin_of) and its terminal frame (send_terminal)."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import override_settings

from connections import tenants as tenant_cache
from connections.manager import Target, manager
from connections.models import Tenant
from protocol import frames
from protocol.errors import ErrorCode, ProtocolError
from storage.base import owner_of
from storage.requests.model import RequestKey, RequestRecord, RequestStatus, shard_for
from storage.requests.store import RequestStore, request_store
from storage.subscription import subscription_store
from streaming import lifecycle
from streaming.actions.registry import ActionRegistry, action
from streaming.worker import Worker
from tests.support.worker import TENANT, new_request_id, submit

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")


@pytest.fixture
def tenant() -> str:
    Tenant.objects.update_or_create(
        pk=TENANT, defaults={"name": TENANT, "active": True, "max_active_requests_per_user": 2}
    )
    tenant_cache.forget_tenant()
    yield TENANT
    tenant_cache.forget_tenant()


@pytest.fixture
def user() -> str:
    """A user of its own: quota counts outlive a test in the module's tables."""
    return new_request_id("user")


@pytest.fixture
def registered(actions: ActionRegistry) -> ActionRegistry:
    @action("lc.double", mode="async", registry=actions)
    async def double(job: Any, payload: dict[str, Any]) -> dict[str, Any]:
        return {"n": payload["n"] * 2}

    @action("lc.now", registry=actions)
    async def sync_action(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    return actions


def _request_id_on_shard(user: str, shards: int, at_least: int) -> str:
    """A request id whose ``due`` shard is >= ``at_least`` of ``shards``: a poller that
    queries fewer shards never finds it."""
    prefix = new_request_id("sharded")
    for n in itertools.count():
        request_id = f"{prefix}-{n}"
        if int(shard_for(owner_of(TENANT, user), request_id, shards)) >= at_least:
            return request_id
    raise AssertionError("unreachable")


async def _enqueue(
    actions: ActionRegistry, user: str, request_id: str, payload: dict[str, Any], **extra: Any
) -> RequestRecord:
    """lifecycle.enqueue of ``lc.double`` (unless ``extra`` names another action)."""
    args: dict[str, Any] = {"action": "lc.double", **extra}
    return await lifecycle.enqueue(
        tenant_id=TENANT,
        user_id=user,
        payload=payload,
        request_id=request_id,
        actions=actions,
        **args,
    )


@pytest.mark.parametrize("shards", [1, 7, 16])
async def test_enqueue_uses_the_configured_shards_and_a_worker_polling_them_runs_it(
    store: RequestStore, registered: ActionRegistry, tenant: str, user: str, shards: int
) -> None:
    request_id = _request_id_on_shard(user, shards, at_least=min(4, shards - 1))
    with override_settings(STREAMER_QUEUE_SHARDS=shards):
        record = await _enqueue(registered, user, request_id, {"n": 21})
        assert record.due_shard == shard_for(record.key.owner, request_id, shards)
        worker = Worker.from_settings(actions=registered, poll_interval_s=0.05)
        assert worker.shards == shards
        assert await worker.poll_once() == 1
        await asyncio.gather(*(task for task, _ in worker.jobs.values()))
    done = await asyncio.to_thread(store.get, record.key)
    assert done.status is RequestStatus.COMPLETED
    assert done.result == {"n": 42}


async def test_with_7_shards_a_4_shard_poller_misses_what_a_7_shard_poller_finds(
    store: RequestStore, registered: ActionRegistry, tenant: str, user: str
) -> None:
    """The bug this fixes: enqueue always wrote 4 shards while pollers read the setting."""
    request_id = _request_id_on_shard(user, 7, at_least=4)
    with override_settings(STREAMER_QUEUE_SHARDS=7):
        await _enqueue(registered, user, request_id, {"n": 1})
    four = await asyncio.to_thread(store.list_due, shards=4)
    seven = await asyncio.to_thread(store.list_due, shards=7)
    assert request_id not in {r.request_id for r in four}
    assert request_id in {r.request_id for r in seven}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"action": "lc.missing"}, ErrorCode.INVALID_ACTION),
        ({"action": "lc.now"}, ErrorCode.INVALID_ACTION),  # sync actions answer at once
        ({"payload": {"n": 1, "x": "y" * 140_000}}, ErrorCode.VALIDATION_ERROR),
        ({"user_id": "u" * 300}, ErrorCode.VALIDATION_ERROR),
        ({"tenant_id": "nobody"}, ErrorCode.FORBIDDEN),
        ({"tenant_id": "disabled"}, ErrorCode.FORBIDDEN),
    ],
)
async def test_enqueue_refuses_bad_input_with_a_clear_code_and_stores_nothing(
    store: RequestStore,
    registered: ActionRegistry,
    tenant: str,
    user: str,
    change: dict[str, Any],
    code: ErrorCode,
) -> None:
    await asyncio.to_thread(
        Tenant.objects.update_or_create, pk="disabled", defaults={"active": False}
    )
    args: dict[str, Any] = {
        "tenant_id": tenant,
        "user_id": user,
        "action": "lc.double",
        "payload": {"n": 1},
        "request_id": new_request_id(),
    }
    args.update(change)
    with pytest.raises(ProtocolError) as info:
        await lifecycle.enqueue(**args, actions=registered)
    assert info.value.code is code
    assert "pynamodb" not in info.value.message.lower()
    assert await asyncio.to_thread(store.list_due, shards=4) == []


async def test_enqueue_refuses_a_duplicate_and_a_full_quota(
    store: RequestStore, registered: ActionRegistry, tenant: str, user: str
) -> None:
    async def enqueue(request_id: str) -> Any:
        return await _enqueue(registered, user, request_id, {"n": 1})

    one = new_request_id()
    await enqueue(one)
    with pytest.raises(ProtocolError) as duplicate:
        await enqueue(one)
    assert duplicate.value.code is ErrorCode.DUPLICATE_REQUEST
    assert duplicate.value.details == {"status": "PENDING"}
    await enqueue(new_request_id())
    with pytest.raises(ProtocolError) as full:
        await enqueue(new_request_id())  # the tenant allows 2 active requests per user
    assert full.value.code is ErrorCode.QUOTA_EXCEEDED
    assert full.value.details == {"scope": "user", "limit": 2}


async def test_enqueue_with_an_origin_delivers_the_end_there(
    store: RequestStore, registered: ActionRegistry, tenant: str, user: str, make_socket: Any
) -> None:
    sock = await make_socket(user)
    origin = Target(sock.connection_id, "channels", sock.channel)
    record = await _enqueue(
        registered, user, new_request_id(), {"n": 2}, metadata={"trace": "t-1"}, origin=origin
    )
    assert lifecycle.origin_of(record) == origin
    worker = Worker.from_settings(actions=registered, shards=4)
    assert await worker.poll_once() == 1
    [end] = [f for f in await sock.until_terminal(record.request_id) if f["type"] == "complete"]
    assert end["result"] == {"n": 4} and end["metadata"] == {"trace": "t-1"}


async def test_requeue_uses_the_configured_shards(
    store: RequestStore, registered: ActionRegistry, tenant: str, user: str
) -> None:
    request_id = _request_id_on_shard(user, 7, at_least=4)
    with override_settings(STREAMER_QUEUE_SHARDS=7):
        record = await _enqueue(registered, user, request_id, {"n": 1})
        await lifecycle.cancel(record.key)
        again = await lifecycle.requeue(record.key)
    assert again.status is RequestStatus.PENDING
    assert again.due_shard == shard_for(record.key.owner, request_id, 7)


@pytest.mark.parametrize("ttl_s", [60, 3600, 30 * 24 * 3600])
async def test_ended_requests_expire_after_the_store_ttl(
    store: RequestStore, user: str, ttl_s: int
) -> None:
    short = RequestStore(record_ttl_s=ttl_s)
    key = RequestKey(TENANT, user, new_request_id())
    await asyncio.to_thread(
        short.enqueue,
        tenant_id=key.tenant_id,
        user_id=key.user_id,
        request_id=key.request_id,
        action="lc.double",
        payload={},
    )
    ended = await asyncio.to_thread(short.cancel, key, 5_000_000)
    assert ended.ttl == 5_000 + ttl_s


def test_the_process_wide_store_takes_its_ttl_from_settings() -> None:
    from django.conf import settings

    assert request_store.record_ttl_s == settings.STREAMER_REQUEST_TTL_S


@pytest.mark.parametrize(("frames_per_s", "most_frames"), [(0.001, 2), (1000.0, 50)])
async def test_progress_rates_come_from_settings(
    store: RequestStore,
    actions: ActionRegistry,
    tenant: str,
    user: str,
    make_socket: Any,
    frames_per_s: float,
    most_frames: int,
) -> None:
    """With a rate of one frame per 1000 s only the first report and the last (flushed
    before the terminal frame) reach the client; a high rate lets reports through."""

    @action("lc.progress", mode="async", registry=actions)
    async def progress(job: Any, payload: dict[str, Any]) -> None:
        for n in range(1, 51):
            job.report(n * 2)
            await asyncio.sleep(0.002)

    sock = await make_socket(user)
    with override_settings(STREAMER_PROGRESS_FRAMES_PER_S=frames_per_s, STREAMER_QUEUE_SHARDS=4):
        record = await _enqueue(
            actions,
            user,
            new_request_id(),
            {},
            action="lc.progress",
            origin=Target(sock.connection_id, "channels", sock.channel),
        )
        worker = Worker.from_settings(actions=actions)
        assert worker.progress_frames_per_s == frames_per_s
        assert await worker.poll_once() == 1
    stream = await sock.until_terminal(record.request_id)
    shown = [f["percentage"] for f in stream if f["type"] == "progress"]
    assert shown[-1] == 100
    assert shown == sorted(shown)
    if most_frames == 2:
        assert shown == [2, 100]
    else:
        assert len(shown) > 2


@pytest.mark.parametrize(
    ("connection_id", "transport", "address", "expected"),
    [
        ("c1", "channels", "chan!1", Target("c1", "channels", "chan!1")),
        (
            "c1",
            "apigw",
            "https://x/@connections/1",
            Target("c1", "apigw", "https://x/@connections/1"),
        ),
        ("", "channels", "chan!1", None),  # enqueued without a connection (a back end)
        ("c1", "", "", None),
    ],
)
def test_origin_of(connection_id: str, transport: str, address: str, expected: Any) -> None:
    record = SimpleNamespace(
        connection_id=connection_id, origin_transport=transport, origin_address=address
    )
    assert lifecycle.origin_of(record) == expected  # type: ignore[arg-type]


async def test_send_terminal_rereads_subscribers_so_a_late_one_gets_the_end(
    store: RequestStore, make_socket: Any
) -> None:
    sender, late = await make_socket(), await make_socket()
    record = await submit(sender, "t.any", wake=False)
    key = record.key.as_string()
    await manager.send_to_request(
        key, frames.progress(record.request_id, 10), origin=lifecycle.origin_of(record)
    )
    await asyncio.to_thread(
        subscription_store.subscribe, key, late.connection_id, "channels", late.channel
    )
    await manager.send_to_request(
        key, frames.progress(record.request_id, 20), origin=lifecycle.origin_of(record)
    )
    await lifecycle.send_terminal(record, frames.complete(record.request_id, {"ok": 1}))
    await sender.drain()
    await late.drain()
    assert [f["type"] for f in sender.about(record.request_id)] == [
        "acknowledgment",
        "progress",
        "progress",
        "complete",
    ]
    assert [f["type"] for f in late.about(record.request_id)] == ["complete"]
