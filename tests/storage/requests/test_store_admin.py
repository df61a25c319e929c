"""The store code the admin needs: RequestStore.list_by_tenant / requeue, heartbeats."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from storage import base, heartbeat
from storage.errors import InvalidTransition, NotFound, ValidationError
from storage.heartbeat import ALIVE_MS, HEARTBEAT_TTL_MS, Heartbeat
from storage.requests import store as store_module
from storage.requests.model import RequestModel, RequestRecord, RequestStatus, shard_for
from storage.requests.store import request_store
from tests.support.admin import T0, key

pytestmark = pytest.mark.usefixtures("admin_state")

S = RequestStatus


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def _ids(records: list[RequestRecord]) -> list[str]:
    return [r.request_id for r in records]


@pytest.fixture
def moto_dynamodb(dynamodb: base.StoreConfig) -> base.StoreConfig:
    """These store tests run against moto and (integration tier) the embedded dynalite."""
    return dynamodb


@pytest.fixture
def many(enqueue: Callable[..., RequestRecord]) -> list[str]:
    """7 requests of tenant acme over two users (r0 oldest), plus one of another tenant."""
    ids = []
    for i in range(7):
        enqueue(f"r{i}", user_id="alice" if i % 2 else "bob", now=T0 + i * 1000)
        ids.append(f"r{i}")
    enqueue("other", tenant_id="globex", now=T0 + 99_000)
    return ids


# --- list_by_tenant ----------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3, 6, 7, 50])
def test_list_by_tenant_pages_newest_first_over_every_user(many: list[str], limit: int) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = request_store.list_by_tenant("acme", limit=limit, cursor=cursor)
        assert len(page.items) <= limit
        seen += _ids(page.items)
        pages += 1
        if page.cursor is None:
            break
        assert len(page.items) == limit
        cursor = page.cursor
    assert seen == list(reversed(many))
    assert pages == -(-7 // limit)  # the last page carries no cursor


def test_list_by_tenant_filters_by_status(
    many: list[str], enqueue: Callable[..., RequestRecord]
) -> None:
    for request_id in ("r1", "r4", "r5"):
        request_store.cancel(key(request_id, user_id="alice" if int(request_id[1]) % 2 else "bob"))
    first = request_store.list_by_tenant("acme", status="CANCELLED", limit=2)
    assert _ids(first.items) == ["r5", "r4"]
    assert first.cursor is not None
    second = request_store.list_by_tenant("acme", status=S.CANCELLED, limit=2, cursor=first.cursor)
    assert _ids(second.items) == ["r1"]
    assert second.cursor is None
    pending = request_store.list_by_tenant("acme", status="PENDING", limit=50)
    assert _ids(pending.items) == ["r6", "r3", "r2", "r0"]
    assert request_store.list_by_tenant("nobody").items == []


def test_list_by_tenant_status_scan_is_bounded(
    many: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_TENANT_SCAN examined entries a page stops early but keeps a cursor."""
    monkeypatch.setattr(store_module, "MAX_TENANT_SCAN", 3)
    monkeypatch.setattr(store_module, "MAX_LIST_LIMIT", 3)
    page = request_store.list_by_tenant("acme", status="COMPLETED", limit=2)
    assert page.items == []
    assert page.cursor is not None
    pages = 1
    while page.cursor is not None:
        page = request_store.list_by_tenant("acme", status="COMPLETED", limit=2, cursor=page.cursor)
        assert page.items == []
        pages += 1
    assert pages == 3  # 7 entries, at most 3 examined per call


def test_list_by_tenant_skips_entries_whose_item_is_gone(
    many: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = request_store.batch_get

    def lossy(keys: list[Any], consistent: bool = False) -> list[RequestRecord]:
        return [r for r in real(keys, consistent) if r.request_id != "r5"]

    monkeypatch.setattr(request_store, "batch_get", lossy)
    first = request_store.list_by_tenant("acme", limit=3)
    assert _ids(first.items) == ["r6", "r4", "r3"]
    rest = request_store.list_by_tenant("acme", limit=3, cursor=first.cursor)
    assert _ids(rest.items) == ["r2", "r1", "r0"]
    assert rest.cursor is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"tenant_id": ""}, "tenant_id"),
        ({"tenant_id": "a#b"}, "#"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": True}, "limit"),
        ({"status": "DONE"}, "unknown status"),
        ({"cursor": "%%%"}, "invalid cursor"),
        ({"cursor": _cursor([1])}, "invalid cursor"),
        ({"cursor": _cursor({"u": "a", "r": "b"})}, "invalid cursor"),
        ({"cursor": _cursor({"u": "", "r": "b", "c": 1})}, "invalid cursor"),
        ({"cursor": _cursor({"u": "a", "r": "", "c": 1})}, "invalid cursor"),
        ({"cursor": _cursor({"u": "a", "r": "b", "c": -1})}, "invalid cursor"),
        ({"cursor": _cursor({"u": "a", "r": "b", "c": True})}, "invalid cursor"),
        ({"cursor": _cursor({"u": "a", "r": "b", "c": "1"})}, "invalid cursor"),
        ({"cursor": _cursor({"u": 1, "r": "b", "c": 1})}, "invalid cursor"),
        ({"cursor": _cursor({"u": "a", "r": "b", "c": 1, "x": 1})}, "invalid cursor"),
    ],
)
def test_list_by_tenant_rejects_bad_arguments(
    moto_dynamodb: base.StoreConfig, args: dict[str, Any], message: str
) -> None:
    call = {"tenant_id": "acme", **args}
    tenant_id = call.pop("tenant_id")
    with pytest.raises(ValidationError, match=message):
        request_store.list_by_tenant(tenant_id, **call)


def test_by_tenant_index_is_keys_only(moto_dynamodb: base.StoreConfig) -> None:
    index = RequestModel._connection.describe_table()["GlobalSecondaryIndexes"]  # type: ignore[union-attr]
    by_name = {i["IndexName"]: i for i in index}
    assert by_name["by_tenant"]["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert [k["AttributeName"] for k in by_name["by_tenant"]["KeySchema"]] == [
        "tenant_id",
        "created_at",
    ]


# --- requeue ------------------------------------------------------------------------------


def _failed(enqueue: Callable[..., RequestRecord], request_id: str = "r1") -> RequestRecord:
    enqueue(request_id, now=T0)
    request_store.claim(key(request_id), "w1", 30_000, now=T0 + 10)
    request_store.update_progress(key(request_id), 40, "going", {"step": 2})
    return request_store.fail(key(request_id), "PROCESSING_FAILED", "boom", now=T0 + 20)


@pytest.mark.parametrize("ended", ["FAILED", "CANCELLED", "CANCELLED_PENDING"])
def test_requeue_sends_an_ended_request_back_to_pending(
    enqueue: Callable[..., RequestRecord], ended: str
) -> None:
    if ended == "FAILED":
        _failed(enqueue)
    else:
        enqueue("r1", now=T0)
        if ended == "CANCELLED":
            request_store.claim(key("r1"), "w1", 30_000, now=T0 + 10)
        request_store.cancel(key("r1"), now=T0 + 20)
    record = request_store.requeue(key("r1"), now=T0 + 5000)
    assert record.status is S.PENDING
    assert record.attempts == 0
    assert record.error is None and record.result is None
    assert record.percentage == 0 and record.message == "" and record.details is None
    assert record.started_at is None and record.ended_at is None and record.ttl is None
    assert record.lease_owner is None
    assert record.due_at == T0 + 5000 and record.due_shard == shard_for("acme#alice", "r1")
    assert record.requeued_at == T0 + 5000
    assert record.created_at == T0 and record.payload == {"rows": 3}
    # Back in the work queue: a worker claims it and the attempt count restarts.
    due = request_store.list_due(now=T0 + 6000)
    assert [r.request_id for r in due] == ["r1"]
    claimed = request_store.claim(key("r1"), "w2", 30_000, now=T0 + 6000)
    assert claimed is not None and claimed.attempts == 1 and claimed.started_at == T0 + 6000


@pytest.mark.parametrize("status", ["PENDING", "PROCESSING", "COMPLETED"])
def test_requeue_refuses_other_statuses(enqueue: Callable[..., RequestRecord], status: str) -> None:
    enqueue("r1", now=T0)
    if status != "PENDING":
        request_store.claim(key("r1"), "w1", 30_000, now=T0 + 10)
    if status == "COMPLETED":
        request_store.complete(key("r1"), {"ok": 1})
    with pytest.raises(InvalidTransition) as info:
        request_store.requeue(key("r1"))
    assert info.value.current_status == status
    assert request_store.get(key("r1")).status.value == status


def test_requeue_missing_and_invalid(moto_dynamodb: base.StoreConfig) -> None:
    with pytest.raises(NotFound):
        request_store.requeue(key("nope"))
    with pytest.raises(ValidationError):
        request_store.requeue(key(""))
    with pytest.raises(ValidationError):
        request_store.requeue(key("x"), shards=0)


# --- heartbeats -----------------------------------------------------------------------------


def test_heartbeats_roundtrip(moto_dynamodb: base.StoreConfig) -> None:
    now = T0 + 100_000
    heartbeat.beat("w-old", started_at=T0, jobs=0, now=now - ALIVE_MS)
    heartbeat.beat("w-new", started_at=T0, jobs=3, now=now - 1000)
    heartbeat.beat(
        "w-gone", started_at=T0 - HEARTBEAT_TTL_MS, jobs=0, now=now - HEARTBEAT_TTL_MS - 1
    )
    beats = heartbeat.list_heartbeats(now=now)
    assert [b.worker_id for b in beats] == ["w-new", "w-old"]  # expired one skipped
    alive = {b.worker_id: b.is_alive(now) for b in beats}
    assert alive == {"w-new": True, "w-old": False}
    assert beats[0].as_dict(now) == {
        "worker_id": "w-new",
        "last_beat": now - 1000,
        "started_at": T0,
        "jobs": 3,
        "alive": True,
        "last_beat_age_s": 1.0,
    }
    heartbeat.forget("w-new")
    heartbeat.forget("w-new")  # idempotent
    assert [b.worker_id for b in heartbeat.list_heartbeats(now=now)] == ["w-old"]
    stored = heartbeat.beat("w3", started_at=T0, jobs=1)
    assert stored.last_beat >= T0 and heartbeat.list_heartbeats()[0].worker_id == "w3"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"worker_id": "", "started_at": 0, "jobs": 0},
        {"worker_id": "w", "started_at": -1, "jobs": 0},
        {"worker_id": "w", "started_at": 0, "jobs": True},
        {"worker_id": "w", "started_at": 0, "jobs": 0, "now": "1"},
    ],
)
def test_heartbeat_validation(kwargs: dict[str, Any]) -> None:
    kwargs = dict(kwargs)  # the parameter is shared: a second run in one process needs it whole
    worker_id = kwargs.pop("worker_id")
    with pytest.raises(ValidationError):
        heartbeat.beat(worker_id, **kwargs)


def test_heartbeat_age_never_negative() -> None:
    beat = Heartbeat("w", last_beat=T0 + 10, started_at=T0, jobs=0)
    assert beat.age_ms(T0) == 0 and beat.is_alive(T0)
