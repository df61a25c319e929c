"""Contract of :mod:`storage.connection`, against moto and the embedded server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from storage import base
from storage import connection as connection_module
from storage.connection import (
    CONNECTION_TTL_MS,
    MAX_USER_AGENT,
    STALE_SHARDS,
    ConnectionInfo,
    ConnectionModel,
    connection_store,
    owner_of,
    stale_shard_of,
)
from storage.errors import NotFound, StorageUnavailable, StoreError, ValidationError
from tests.storage.helpers import drain, fail_calls_with, no_network_fixture, unreachable_fixture  # noqa: F401

store = connection_store


def info(
    connection_id: str = "c1",
    tenant_id: str = "acme",
    user_id: str = "alice",
    **overrides: Any,
) -> ConnectionInfo:
    fields: dict[str, Any] = {
        "transport": "channels",
        "address": f"specific.{connection_id}!abc",
        "permissions": ("reports.run",),
    }
    fields.update(overrides)
    return ConnectionInfo(connection_id, tenant_id, user_id, **fields)


# --------------------------------------------------------------------------- save / get


@pytest.mark.parametrize(
    ("given", "expected_changes"),
    [
        pytest.param(info(connected_at=1_000, last_seen=2_000), {}, id="explicit-times"),
        pytest.param(
            info(transport="apigw", address="https://abc.execute-api.eu-west-1.amazonaws.com/prod"),
            {},
            id="apigw",
        ),
        pytest.param(info(permissions=()), {}, id="no-permissions"),
        pytest.param(info(permissions=("a", "b", "c")), {}, id="several-permissions"),
        pytest.param(info(permissions=["a", "b"]), {"permissions": ("a", "b")}, id="list-perms"),
        pytest.param(info(user_agent="Mozilla/5.0", source_ip="203.0.113.9"), {}, id="ua-ip"),
        pytest.param(info(user_agent="", source_ip=None), {}, id="empty-ua-no-ip"),
        pytest.param(
            info(user_agent="x" * (MAX_USER_AGENT + 50)),
            {"user_agent": "x" * MAX_USER_AGENT},
            id="long-ua-truncated",
        ),
        pytest.param(info(user_id="user#with#hashes"), {}, id="hash-in-user-id"),
    ],
)
def test_save_then_get_round_trips(
    dynamodb: base.StoreConfig, given: ConnectionInfo, expected_changes: dict[str, Any]
) -> None:
    saved = store.save(given)
    expected = ConnectionInfo(**{**given.__dict__, **expected_changes})
    if given.connected_at == 0:
        assert saved.connected_at > 0
        assert saved.last_seen >= saved.connected_at
        expected = ConnectionInfo(
            **{
                **expected.__dict__,
                "connected_at": saved.connected_at,
                "last_seen": saved.last_seen,
            }
        )
    assert saved == expected
    assert store.get(given.connection_id) == saved


def test_save_fills_times_with_now(dynamodb: base.StoreConfig) -> None:
    before = base.now_ms()
    saved = store.save(info())
    after = base.now_ms()
    assert before <= saved.connected_at <= after
    assert saved.last_seen == saved.connected_at
    # last_seen alone defaults to now, connected_at is kept.
    again = store.save(info("c2", connected_at=5))
    assert again.connected_at == 5
    assert before <= again.last_seen <= base.now_ms()


def test_save_stores_keys_shard_and_ttl(dynamodb: base.StoreConfig) -> None:
    saved = store.save(info("c-ttl", connected_at=1_700_000_000_000, last_seen=1_700_000_000_500))
    item = ConnectionModel.get("c-ttl")
    assert item.owner == owner_of("acme", "alice") == "acme#alice" == saved.owner
    assert item.stale_shard == stale_shard_of("c-ttl")
    assert item.stale_shard in {str(n) for n in range(STALE_SHARDS)}
    assert item.ttl is not None
    assert int(item.ttl.timestamp()) == (saved.last_seen + CONNECTION_TTL_MS) // 1000


def test_stale_shard_is_stable_and_spread() -> None:
    shards = [stale_shard_of(f"conn-{n}") for n in range(400)]
    assert shards == [stale_shard_of(f"conn-{n}") for n in range(400)]
    assert set(shards) == {str(n) for n in range(STALE_SHARDS)}


def test_save_is_an_upsert(dynamodb: base.StoreConfig) -> None:
    store.save(info(address="first", permissions=("a",), user_agent="ua-1", source_ip="10.0.0.1"))
    second = store.save(info(address="second", permissions=(), connected_at=7, last_seen=8))
    got = store.get("c1")
    assert got == second
    assert got.address == "second"
    assert got.permissions == ()
    assert got.user_agent == ""
    assert got.source_ip is None
    assert store.count_by_tenant("acme") == 1


@pytest.mark.parametrize("connection_id", ["missing", "x" * 256])
def test_get_unknown_is_not_found(dynamodb: base.StoreConfig, connection_id: str) -> None:
    with pytest.raises(NotFound):
        store.get(connection_id)


# --------------------------------------------------------------------------- delete


@pytest.mark.parametrize(
    ("existing", "target", "first", "second"),
    [
        pytest.param(["c1"], "c1", True, False, id="existing"),
        pytest.param(["c1"], "c2", False, False, id="unknown"),
        pytest.param([], "c1", False, False, id="empty-table"),
    ],
)
def test_delete_is_idempotent(
    dynamodb: base.StoreConfig, existing: list[str], target: str, first: bool, second: bool
) -> None:
    for connection_id in existing:
        store.save(info(connection_id))
    assert store.delete(target) is first
    assert store.delete(target) is second
    with pytest.raises(NotFound):
        store.get(target)
    for connection_id in existing:
        if connection_id != target:
            assert store.get(connection_id).connection_id == connection_id


# --------------------------------------------------------------------------- touch


@pytest.mark.parametrize("at_ms", [None, 0, 1_800_000_000_000])
def test_touch_sets_last_seen_and_pushes_ttl(dynamodb: base.StoreConfig, at_ms: int | None) -> None:
    saved = store.save(info(connected_at=1_000, last_seen=1_000))
    before = base.now_ms()
    store.touch("c1", at_ms)
    got = store.get("c1")
    if at_ms is None:
        assert before <= got.last_seen <= base.now_ms()
    else:
        assert got.last_seen == at_ms
    # Nothing else changes.
    assert got == ConnectionInfo(**{**saved.__dict__, "last_seen": got.last_seen})
    item = ConnectionModel.get("c1")
    assert item.ttl is not None
    assert int(item.ttl.timestamp()) == (got.last_seen + CONNECTION_TTL_MS) // 1000
    assert item.stale_shard == stale_shard_of("c1")


@pytest.mark.parametrize("deleted_first", [False, True], ids=["never-saved", "deleted"])
def test_touch_unknown_is_not_found_and_creates_nothing(
    dynamodb: base.StoreConfig, deleted_first: bool
) -> None:
    if deleted_first:
        store.save(info("ghost"))
        store.delete("ghost")
    with pytest.raises(NotFound):
        store.touch("ghost", 5_000)
    with pytest.raises(NotFound):
        store.get("ghost")
    assert ConnectionModel.count("ghost") == 0
    assert store.count_by_tenant("acme") == 0


# --------------------------------------------------------------------------- lists


def _seed_user(count: int, tenant_id: str = "acme", user_id: str = "alice") -> list[str]:
    """``count`` connections with increasing connected_at; returns their ids newest first."""
    ids = []
    for n in range(count):
        connection_id = f"{tenant_id}-{user_id}-{n:03d}"
        store.save(info(connection_id, tenant_id, user_id, connected_at=10_000 + n * 10))
        ids.append(connection_id)
    return ids[::-1]


def _all_pages(fetch: Callable[[str | None], base.Page[ConnectionInfo]]) -> list[list[str]]:
    pages = []
    cursor = None
    while True:
        page = fetch(cursor)
        pages.append([item.connection_id for item in page.items])
        if page.cursor is None:
            return pages
        assert isinstance(page.cursor, str)
        cursor = page.cursor
        assert len(pages) < 50, "pagination does not end"


@pytest.mark.parametrize(
    ("count", "limit", "sizes"),
    [
        pytest.param(7, 3, [3, 3, 1], id="7-by-3"),
        pytest.param(6, 3, [3, 3], id="exact-multiple-has-no-empty-last-page"),
        pytest.param(5, 100, [5], id="one-page"),
        pytest.param(1, 1, [1], id="single"),
        pytest.param(4, 1, [1, 1, 1, 1], id="4-by-1"),
        pytest.param(0, 10, [0], id="none"),
    ],
)
def test_list_by_user_pages_newest_first(
    dynamodb: base.StoreConfig, count: int, limit: int, sizes: list[int]
) -> None:
    expected = _seed_user(count)
    _seed_user(3, user_id="bob")  # same tenant, other user
    _seed_user(2, tenant_id="other")  # same user id, other tenant
    pages = _all_pages(
        lambda cursor: store.list_by_user("acme", "alice", limit=limit, cursor=cursor)
    )
    assert [len(page) for page in pages] == sizes
    assert [cid for page in pages for cid in page] == expected


@pytest.mark.parametrize(("limit", "sizes"), [(4, [4, 4, 1]), (9, [9]), (50, [9])])
def test_list_by_tenant_pages_newest_first_across_users(
    dynamodb: base.StoreConfig, limit: int, sizes: list[int]
) -> None:
    for n, user in enumerate(["alice", "bob", "carol"] * 3):
        store.save(info(f"t-{n}", "acme", user, connected_at=50_000 + n))
    store.save(info("elsewhere", "other", "alice", connected_at=99_999))
    pages = _all_pages(lambda cursor: store.list_by_tenant("acme", limit=limit, cursor=cursor))
    assert [len(page) for page in pages] == sizes
    assert [cid for page in pages for cid in page] == [f"t-{n}" for n in range(8, -1, -1)]


def test_list_items_carry_every_field(dynamodb: base.StoreConfig) -> None:
    saved = store.save(
        info("full", user_agent="ua", source_ip="198.51.100.1", permissions=("x", "y"))
    )
    assert store.list_by_user("acme", "alice").items == [saved]
    assert store.list_by_tenant("acme").items == [saved]
    assert list(store.iter_by_user("acme", "alice")) == [saved]
    assert list(store.iter_by_tenant("acme")) == [saved]


def test_default_limit_is_50(dynamodb: base.StoreConfig) -> None:
    _seed_user(52)
    page = store.list_by_tenant("acme")
    assert len(page.items) == 50
    assert page.cursor is not None
    assert len(store.list_by_tenant("acme", cursor=page.cursor).items) == 2


def test_connections_with_equal_connect_times_page_without_loss(
    dynamodb: base.StoreConfig,
) -> None:
    for n in range(5):
        store.save(info(f"same-{n}", connected_at=77_000))
    pages = _all_pages(lambda cursor: store.list_by_user("acme", "alice", limit=2, cursor=cursor))
    flat = [cid for page in pages for cid in page]
    assert sorted(flat) == [f"same-{n}" for n in range(5)]


@pytest.mark.parametrize("page_size", [1, 3, 100])
def test_iter_reads_every_page(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch, page_size: int
) -> None:
    monkeypatch.setattr(connection_module, "_ITER_PAGE", page_size)
    alice = _seed_user(7)
    bob = _seed_user(4, user_id="bob")
    _seed_user(2, tenant_id="other")
    assert [c.connection_id for c in store.iter_by_user("acme", "alice")] == alice
    assert [c.connection_id for c in store.iter_by_user("acme", "bob")] == bob
    assert sorted(c.connection_id for c in store.iter_by_tenant("acme")) == sorted(alice + bob)
    assert list(store.iter_by_user("acme", "nobody")) == []
    assert list(store.iter_by_tenant("nobody")) == []


@pytest.mark.parametrize(
    ("per_tenant", "tenant", "expected"),
    [({}, "acme", 0), ({"acme": 3}, "acme", 3), ({"acme": 2, "other": 5}, "other", 5)],
)
def test_count_by_tenant(
    dynamodb: base.StoreConfig, per_tenant: dict[str, int], tenant: str, expected: int
) -> None:
    for tenant_id, count in per_tenant.items():
        for n in range(count):
            store.save(info(f"{tenant_id}-{n}", tenant_id, f"user-{n % 2}"))
    assert store.count_by_tenant(tenant) == expected


def test_count_follows_deletes(dynamodb: base.StoreConfig) -> None:
    _seed_user(4)
    store.delete("acme-alice-001")
    assert store.count_by_tenant("acme") == 3


# --------------------------------------------------------------------------- cursors


def _cursor(key: Any) -> str:
    import base64

    import orjson

    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def _key(owner: str = "acme#alice", **changes: Any) -> dict[str, Any]:
    key: dict[str, Any] = {
        "connection_id": {"S": "c1"},
        "owner": {"S": owner},
        "connected_at": {"N": "10"},
    }
    key.update(changes)
    return {k: v for k, v in key.items() if v is not None}


BAD_CURSORS = [
    pytest.param("%%%not-base64%%%", id="not-base64"),
    pytest.param(_cursor([1, 2]), id="not-an-object"),
    pytest.param("bm90IGpzb24", id="not-json"),
    pytest.param(_cursor({}), id="empty-object"),
    pytest.param(_cursor(_key(owner="acme#bob")), id="other-users-cursor"),
    pytest.param(_cursor(_key(owner="other#alice")), id="other-tenants-cursor"),
    pytest.param(_cursor(_key(connected_at={"N": "-5"})), id="negative-time"),
    pytest.param(_cursor(_key(connected_at={"S": "10"})), id="time-not-number"),
    pytest.param(_cursor(_key(connected_at={"N": 10})), id="time-not-string"),
    pytest.param(_cursor(_key(connection_id={"S": ""})), id="empty-id"),
    pytest.param(_cursor(_key(connection_id={"S": 5})), id="id-not-string"),
    pytest.param(_cursor(_key(connection_id=5)), id="id-not-map"),
    pytest.param(_cursor(_key(connection_id={"N": "5"})), id="id-wrong-type"),
    pytest.param(_cursor(_key(connected_at=None)), id="missing-range"),
    pytest.param(_cursor({**_key(), "extra": {"S": "x"}}), id="extra-key"),
    pytest.param(_cursor(_key(owner=None) | {"tenant_id": {"S": "acme"}}), id="tenant-cursor"),
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_bad_cursor_for_user_list_is_validation_error(no_network: list[str], cursor: str) -> None:
    with pytest.raises(ValidationError):
        store.list_by_user("acme", "alice", cursor=cursor)
    assert no_network == []


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param(_cursor(_key()), id="user-cursor"),
        pytest.param(_cursor(_key(owner=None) | {"tenant_id": {"S": "other"}}), id="other-tenant"),
        pytest.param("garbage!", id="garbage"),
    ],
)
def test_bad_cursor_for_tenant_list_is_validation_error(no_network: list[str], cursor: str) -> None:
    with pytest.raises(ValidationError):
        store.list_by_tenant("acme", cursor=cursor)
    assert no_network == []


def test_a_real_cursor_only_works_for_its_own_list(dynamodb: base.StoreConfig) -> None:
    _seed_user(3)
    _seed_user(3, user_id="bob")
    user_cursor = store.list_by_user("acme", "alice", limit=1).cursor
    tenant_cursor = store.list_by_tenant("acme", limit=1).cursor
    assert user_cursor and tenant_cursor
    with pytest.raises(ValidationError):
        store.list_by_user("acme", "bob", cursor=user_cursor)
    with pytest.raises(ValidationError):
        store.list_by_tenant("acme", cursor=user_cursor)
    with pytest.raises(ValidationError):
        store.list_by_user("acme", "alice", cursor=tenant_cursor)
    with pytest.raises(ValidationError):
        store.list_by_tenant("other", cursor=tenant_cursor)
    # The empty cursor means "first page".
    assert len(store.list_by_user("acme", "alice", limit=5, cursor="").items) == 3


# --------------------------------------------------------------------------- delete_stale


def _seed_ages(now: int, ages_ms: dict[str, int]) -> None:
    for connection_id, age in ages_ms.items():
        store.save(info(connection_id, connected_at=now - age, last_seen=now - age))


@pytest.mark.parametrize(
    ("old", "fresh"),
    [pytest.param(0, 5, id="nothing-stale"), (3, 4), pytest.param(60, 10, id="several-batches")],
)
def test_delete_stale_removes_only_old_connections(
    dynamodb: base.StoreConfig, old: int, fresh: int
) -> None:
    now = base.now_ms()
    minute = 60_000
    _seed_ages(now, {f"old-{n}": 30 * minute + n for n in range(old)})
    _seed_ages(now, {f"fresh-{n}": n * 1_000 for n in range(fresh)})
    # One that was stale but was touched since then stays.
    _seed_ages(now, {"revived": 40 * minute})
    store.touch("revived")

    progress: list[int] = []
    assert store.delete_stale(10 * minute, dry_run=True, on_progress=progress.append) == old
    assert store.count_by_tenant("acme") == old + fresh + 1, "a dry run deletes nothing"
    assert progress and progress[-1] == old and progress == sorted(progress)

    progress.clear()
    assert store.delete_stale(10 * minute, on_progress=progress.append) == old
    if old:
        assert progress[-1] == old
        assert progress == sorted(progress)
        assert all(step > 0 for step in progress)
        assert len(progress) >= -(-old // 25)
    else:
        assert progress == []
    remaining = {c.connection_id for c in store.iter_by_tenant("acme")}
    assert remaining == {f"fresh-{n}" for n in range(fresh)} | {"revived"}
    # Nothing left to do.
    assert store.delete_stale(10 * minute) == 0


def test_delete_stale_covers_every_shard(dynamodb: base.StoreConfig) -> None:
    now = base.now_ms()
    ids = {f"s-{n}": 3_600_000 for n in range(40)}
    assert {stale_shard_of(cid) for cid in ids} == {str(n) for n in range(STALE_SHARDS)}
    _seed_ages(now, ids)
    assert store.delete_stale(60_000) == 40
    assert store.count_by_tenant("acme") == 0


@pytest.mark.parametrize("with_progress", [True, False])
def test_delete_stale_reports_each_batch(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch, with_progress: bool
) -> None:
    monkeypatch.setattr(connection_module, "_BATCH", 2)
    ids = [f"b-{n}" for n in range(60)]
    shard = stale_shard_of(ids[0])
    same_shard = [cid for cid in ids if stale_shard_of(cid) == shard][:5]
    assert len(same_shard) == 5
    _seed_ages(base.now_ms(), dict.fromkeys(same_shard, 3_600_000))
    progress: list[int] = []
    deleted = store.delete_stale(60_000, on_progress=progress.append if with_progress else None)
    assert deleted == 5
    assert progress == ([2, 4, 5] if with_progress else [])
    assert store.count_by_tenant("acme") == 0


def test_delete_stale_without_progress_callback_and_empty_table(
    dynamodb: base.StoreConfig,
) -> None:
    assert store.delete_stale(1) == 0
    assert store.delete_stale(1, dry_run=True) == 0


def test_delete_stale_never_scans(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_ages(base.now_ms(), {"a": 3_600_000, "b": 0})
    from botocore.client import BaseClient

    seen: list[str] = []
    original = BaseClient._make_api_call

    def spy(self: BaseClient, operation_name: str, params: dict[str, Any]) -> Any:
        seen.append(operation_name)
        return original(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", spy)
    assert store.delete_stale(60_000) == 1
    assert "Scan" not in seen
    assert seen.count("Query") == STALE_SHARDS
    assert seen.count("BatchWriteItem") == 1


# --------------------------------------------------------------------------- validation

VALIDATION_CASES: list[Any] = [
    pytest.param(lambda: store.get(""), id="get-empty"),
    pytest.param(lambda: store.get(None), id="get-none"),
    pytest.param(lambda: store.get("x" * 257), id="get-too-long"),
    pytest.param(lambda: store.get(42), id="get-int"),
    pytest.param(lambda: store.delete(""), id="delete-empty"),
    pytest.param(lambda: store.touch(""), id="touch-empty"),
    pytest.param(lambda: store.touch("c1", -1), id="touch-negative"),
    pytest.param(lambda: store.touch("c1", 1.5), id="touch-float"),
    pytest.param(lambda: store.touch("c1", True), id="touch-bool"),
    pytest.param(lambda: store.touch("c1", "123"), id="touch-str"),
    pytest.param(lambda: store.save("c1"), id="save-not-info"),
    pytest.param(lambda: store.save(info("")), id="save-empty-id"),
    pytest.param(lambda: store.save(info(tenant_id="")), id="save-empty-tenant"),
    pytest.param(lambda: store.save(info(tenant_id="a#b")), id="save-hash-in-tenant"),
    pytest.param(lambda: store.save(info(user_id="")), id="save-empty-user"),
    pytest.param(lambda: store.save(info(transport="sse")), id="save-bad-transport"),
    pytest.param(lambda: store.save(info(address="")), id="save-empty-address"),
    pytest.param(lambda: store.save(info(address="a" * 2049)), id="save-long-address"),
    pytest.param(lambda: store.save(info(permissions="admin")), id="save-perms-str"),
    pytest.param(lambda: store.save(info(permissions=("a", ""))), id="save-perms-empty"),
    pytest.param(lambda: store.save(info(permissions=("a", 1))), id="save-perms-int"),
    pytest.param(lambda: store.save(info(connected_at=-1)), id="save-negative-time"),
    pytest.param(lambda: store.save(info(last_seen=1.5)), id="save-float-time"),
    pytest.param(lambda: store.save(info(user_agent=None)), id="save-ua-none"),
    pytest.param(lambda: store.save(info(source_ip="")), id="save-empty-ip"),
    pytest.param(lambda: store.list_by_user("", "alice"), id="list-user-empty-tenant"),
    pytest.param(lambda: store.list_by_user("acme", ""), id="list-user-empty-user"),
    pytest.param(lambda: store.list_by_user("acme", "alice", limit=0), id="list-user-limit-0"),
    pytest.param(lambda: store.list_by_user("acme", "a", limit=101), id="list-user-limit-101"),
    pytest.param(lambda: store.list_by_tenant("acme", limit=-1), id="list-tenant-limit-neg"),
    pytest.param(lambda: store.list_by_tenant("acme", limit=True), id="list-tenant-limit-bool"),
    pytest.param(lambda: store.list_by_tenant("acme", limit="5"), id="list-tenant-limit-str"),
    pytest.param(lambda: store.list_by_tenant(""), id="list-tenant-empty"),
    pytest.param(lambda: store.list_by_tenant("a#b"), id="list-tenant-hash"),
    pytest.param(lambda: store.iter_by_tenant(""), id="iter-tenant-empty"),
    pytest.param(lambda: store.iter_by_user("acme", ""), id="iter-user-empty"),
    pytest.param(lambda: store.iter_by_user("", "alice"), id="iter-user-empty-tenant"),
    pytest.param(lambda: store.count_by_tenant(""), id="count-empty"),
    pytest.param(lambda: store.delete_stale(0), id="stale-zero"),
    pytest.param(lambda: store.delete_stale(-5), id="stale-negative"),
    pytest.param(lambda: store.delete_stale(1.5), id="stale-float"),
    pytest.param(lambda: store.delete_stale(True), id="stale-bool"),
    pytest.param(lambda: store.delete_stale(10, on_progress=5), id="stale-bad-callback"),
]


@pytest.mark.parametrize("call", VALIDATION_CASES)
def test_validation_errors_come_before_any_network_call(
    no_network: list[str], call: Callable[[], Any]
) -> None:
    with pytest.raises(ValidationError):
        call()
    assert no_network == []


def test_validation_error_is_a_value_error() -> None:
    assert issubclass(ValidationError, ValueError)


# --------------------------------------------------------------------------- storage failures

EVERY_OPERATION: list[Any] = [
    pytest.param(lambda: store.save(info()), id="save"),
    pytest.param(lambda: store.get("c1"), id="get"),
    pytest.param(lambda: store.delete("c1"), id="delete"),
    pytest.param(lambda: store.touch("c1"), id="touch"),
    pytest.param(lambda: store.list_by_user("acme", "alice"), id="list_by_user"),
    pytest.param(lambda: store.list_by_tenant("acme"), id="list_by_tenant"),
    pytest.param(lambda: store.iter_by_user("acme", "alice"), id="iter_by_user"),
    pytest.param(lambda: store.iter_by_tenant("acme"), id="iter_by_tenant"),
    pytest.param(lambda: store.count_by_tenant("acme"), id="count_by_tenant"),
    pytest.param(lambda: store.delete_stale(60_000), id="delete_stale"),
    pytest.param(lambda: store.delete_stale(60_000, dry_run=True), id="delete_stale-dry"),
]


@pytest.mark.parametrize("call", EVERY_OPERATION)
def test_unreachable_storage_is_storage_unavailable_quickly(
    unreachable: base.StoreConfig, call: Callable[[], Any]
) -> None:
    start = time.monotonic()
    with pytest.raises(StorageUnavailable) as excinfo:
        drain(call())
    assert time.monotonic() - start < 5
    # No library text leaks into the message.
    assert "127.0.0.1" not in str(excinfo.value)
    assert "Could not connect" not in str(excinfo.value)


@pytest.mark.parametrize(
    "code",
    ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"],
)
@pytest.mark.parametrize("call", EVERY_OPERATION)
def test_throttling_is_storage_unavailable(
    unreachable: base.StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
    code: str,
    call: Callable[[], Any],
) -> None:
    calls = fail_calls_with(monkeypatch, code)
    with pytest.raises(StorageUnavailable):
        drain(call())
    assert calls, "the operation reached storage"


def test_throttled_batch_delete_is_storage_unavailable(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_ages(base.now_ms(), {"old": 3_600_000})
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def throttle_batch(self: BaseClient, operation_name: str, params: dict[str, Any]) -> Any:
        if operation_name == "BatchWriteItem":
            from botocore.exceptions import ClientError

            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}
            raise ClientError(error, operation_name)  # type: ignore[arg-type]
        return original(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", throttle_batch)
    with pytest.raises(StorageUnavailable):
        store.delete_stale(60_000)


@pytest.mark.parametrize(
    ("call", "not_expected"),
    [
        pytest.param(lambda: store.delete("c1"), "returns False", id="delete"),
        pytest.param(lambda: store.touch("c1"), "NotFound", id="touch"),
    ],
)
def test_other_storage_errors_are_not_mistaken_for_a_missing_item(
    unreachable: base.StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
    call: Callable[[], Any],
    not_expected: str,
) -> None:
    fail_calls_with(monkeypatch, "ValidationException")
    with pytest.raises(StoreError) as excinfo:
        call()
    assert not isinstance(excinfo.value, NotFound | StorageUnavailable), not_expected
    assert "ValidationException" not in str(excinfo.value)


# --------------------------------------------------------------------------- concurrency


def test_concurrent_saves_and_touches_leave_consistent_items(dynamodb: base.StoreConfig) -> None:
    shared = store.save(info("shared", connected_at=1_000, last_seen=1_000))
    threads_count = 20
    rounds = 5
    touched: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_count)

    def work(n: int) -> None:
        try:
            barrier.wait()
            own = f"own-{n:02d}"
            store.save(info(own, user_id=f"user-{n % 4}", connected_at=2_000 + n))
            for r in range(rounds):
                at = 10_000 + n * 100 + r
                store.touch(own, at)
                store.touch("shared", at)
                with lock:
                    touched.append(at)
            # Re-saving the shared connection (same id, same data) is an upsert.
            store.save(shared)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []

    assert store.count_by_tenant("acme") == threads_count + 1
    for n in range(threads_count):
        got = store.get(f"own-{n:02d}")
        assert got.last_seen == 10_000 + n * 100 + rounds - 1
        assert got.connected_at == 2_000 + n
        assert got.user_id == f"user-{n % 4}"
    final = store.get("shared")
    assert final.tenant_id == "acme"
    assert final.address == shared.address
    assert final.permissions == shared.permissions
    assert final.last_seen == shared.last_seen or final.last_seen in touched
    per_user = {u: len(list(store.iter_by_user("acme", f"user-{u}"))) for u in range(4)}
    assert per_user == {0: 5, 1: 5, 2: 5, 3: 5}


def test_concurrent_touch_and_delete_never_leave_a_partial_item(
    dynamodb: base.StoreConfig,
) -> None:
    ids = [f"race-{n}" for n in range(10)]
    for connection_id in ids:
        store.save(info(connection_id))
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def toucher(connection_id: str) -> None:
        barrier.wait()
        for _ in range(5):
            try:
                store.touch(connection_id)
                result = "touched"
            except NotFound:
                result = "gone"
            with lock:
                outcomes.append(result)

    def deleter(connection_id: str) -> None:
        barrier.wait()
        with lock:
            outcomes.append(f"deleted={store.delete(connection_id)}")

    threads = [threading.Thread(target=toucher, args=(cid,)) for cid in ids]
    threads += [threading.Thread(target=deleter, args=(cid,)) for cid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert outcomes.count("deleted=True") == len(ids)
    for connection_id in ids:
        with pytest.raises(NotFound):
            store.get(connection_id)
        assert ConnectionModel.count(connection_id) == 0
    assert store.count_by_tenant("acme") == 0


# --- count_owners: every user's count of a tenant in one index query -----------------


@pytest.mark.parametrize(
    ("per_user", "max_rows", "expected"),
    [
        ({}, 1, {}),
        ({"alice": 1}, 1, {"alice": 1}),
        ({"alice": 3, "bob": 1}, 4, {"alice": 3, "bob": 1}),  # exactly max_rows
        ({"alice": 3, "bob": 1}, 3, None),  # one row too many
        ({"alice": 30, "bob": 5}, 100, {"alice": 30, "bob": 5}),
    ],
)
def test_count_owners_counts_each_user_of_the_tenant_or_none_past_max_rows(
    dynamodb: base.StoreConfig, per_user: dict[str, int], max_rows: int, expected: Any
) -> None:
    for user, count in per_user.items():
        store.save_many([info(f"{user}-{n}", user_id=user) for n in range(count)])
    store.save(info("elsewhere", tenant_id="other", user_id="alice"))
    owners = store.count_owners("acme", max_rows)
    if expected is None:
        assert owners is None
    else:
        assert owners == {owner_of("acme", u): n for u, n in expected.items()}
        for user, count in expected.items():
            assert store.count_by_user("acme", user) == count


@pytest.mark.parametrize(
    ("tenant_id", "max_rows"), [("", 10), ("a#b", 10), ("acme", 0), ("acme", True)]
)
def test_count_owners_refuses_bad_arguments(
    dynamodb: base.StoreConfig, tenant_id: str, max_rows: Any
) -> None:
    with pytest.raises(ValidationError):
        store.count_owners(tenant_id, max_rows)


def test_count_owners_with_storage_down_raises_unavailable(
    unreachable: base.StoreConfig,
) -> None:
    with pytest.raises(StorageUnavailable):
        store.count_owners("acme", 10)
