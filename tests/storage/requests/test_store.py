"""Contract of the request store (streaming/requests), against moto AND dynalite."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import botocore.client
import orjson
import pytest
from botocore.exceptions import ClientError

from storage import base, localserver
from storage.errors import (
    AlreadyExists,
    InvalidTransition,
    NotFound,
    StorageUnavailable,
    StoreError,
    ValidationError,
)
from storage.requests import (
    ALLOWED,
    FINAL,
    RECORD_TTL_S,
    RequestKey,
    RequestModel,
    RequestRecord,
    RequestStatus,
    RequestStore,
    request_store,
    shard_for,
)
from storage.requests import store as store_module
from storage.requests.model import JSONValueAttribute

S = RequestStatus
T0 = 1_700_000_000_000
LEASE = 30_000
KEY = RequestKey("acme", "alice", "r1")


@pytest.fixture
def store(dynamodb: base.StoreConfig) -> RequestStore:
    return RequestStore()


def enqueue(store: RequestStore, key: RequestKey = KEY, **overrides: Any) -> RequestRecord:
    args: dict[str, Any] = {
        "tenant_id": key.tenant_id,
        "user_id": key.user_id,
        "request_id": key.request_id,
        "action": "report.run",
        "payload": {"rows": 3},
        "now": T0,
    }
    args.update(overrides)
    return store.enqueue(**args)


def bring_to(store: RequestStore, status: RequestStatus, key: RequestKey = KEY) -> RequestRecord:
    """A request in ``status`` (created at T0, claimed at T0 by worker w1)."""
    record = enqueue(store, key)
    if status is S.PENDING:
        return record
    if status is S.CANCELLED:
        return store.cancel(key, now=T0 + 1)
    claimed = store.claim(key, "w1", LEASE, now=T0)
    assert claimed is not None
    if status is S.PROCESSING:
        return claimed
    if status is S.RETRYING:
        return store.schedule_retry(key, T0 + 10, "TIMEOUT", "took too long", worker_id="w1")
    if status is S.COMPLETED:
        return store.complete(key, {"ok": True}, worker_id="w1", now=T0 + 2)
    return store.fail(key, "PROCESSING_FAILED", "boom", worker_id="w1", now=T0 + 2)


# --- status machine ------------------------------------------------------------------


def test_allowed_is_exactly_protocol_section_3() -> None:
    assert {k.value: {v.value for v in vs} for k, vs in ALLOWED.items()} == {
        "PENDING": {"PROCESSING", "CANCELLED"},
        "PROCESSING": {"COMPLETED", "FAILED", "RETRYING", "CANCELLED"},
        "RETRYING": {"PROCESSING", "FAILED", "CANCELLED"},
        "COMPLETED": set(),
        "FAILED": set(),
        "CANCELLED": set(),
    }
    assert {s.value for s in FINAL} == {"COMPLETED", "FAILED", "CANCELLED"}


def _do(store: RequestStore, operation: str) -> RequestRecord | None:
    now = T0 + 1_000  # past the retry time, before the lease expiry
    if operation == "claim":
        return store.claim(KEY, "w2", LEASE, now=now)
    if operation == "complete":
        return store.complete(KEY, {"n": 1}, now=now)
    if operation == "fail":
        return store.fail(KEY, "PROCESSING_FAILED", "bad", now=now)
    if operation == "schedule_retry":
        return store.schedule_retry(KEY, now + 5, "TIMEOUT", "slow")
    return store.cancel(KEY, now=now)


# (from, operation, resulting status or None when refused). Refusals raise
# InvalidTransition, except claim, which answers None.
TRANSITIONS = [
    (S.PENDING, "claim", S.PROCESSING),
    (S.PENDING, "cancel", S.CANCELLED),
    (S.PENDING, "complete", None),
    (S.PENDING, "fail", None),
    (S.PENDING, "schedule_retry", None),
    (S.PROCESSING, "complete", S.COMPLETED),
    (S.PROCESSING, "fail", S.FAILED),
    (S.PROCESSING, "schedule_retry", S.RETRYING),
    (S.PROCESSING, "cancel", S.CANCELLED),
    (S.PROCESSING, "claim", None),  # lease still valid
    (S.RETRYING, "claim", S.PROCESSING),
    (S.RETRYING, "fail", S.FAILED),
    (S.RETRYING, "cancel", S.CANCELLED),
    (S.RETRYING, "complete", None),
    (S.RETRYING, "schedule_retry", None),
    *[
        (final, op, None)
        for final in (S.COMPLETED, S.FAILED, S.CANCELLED)
        for op in ("claim", "complete", "fail", "schedule_retry", "cancel")
    ],
]


@pytest.mark.parametrize(("start", "operation", "expected"), TRANSITIONS)
def test_transition_table(
    store: RequestStore, start: RequestStatus, operation: str, expected: RequestStatus | None
) -> None:
    before = bring_to(store, start)
    if expected is None:
        if operation == "claim":
            assert _do(store, operation) is None
        else:
            with pytest.raises(InvalidTransition) as info:
                _do(store, operation)
            assert info.value.current_status == start.value
        after = store.get(KEY)
        assert after.status is start
        assert after == before  # nothing written
        return
    after = _do(store, operation)
    assert after is not None
    assert after.status is expected
    assert expected in ALLOWED[start]
    assert store.get(KEY) == after
    if expected in FINAL:
        assert after.ended_at == T0 + 1_000
        assert after.ttl == (T0 + 1_000) // 1000 + RECORD_TTL_S
        assert after.due_shard is None and after.due_at is None
        assert after.lease_owner is None and after.lease_expires_at is None
    else:
        assert after.due_shard == shard_for(KEY.owner, KEY.request_id)


@pytest.mark.parametrize("operation", ["complete", "fail", "schedule_retry", "cancel", "renew"])
def test_transitions_of_missing_request_are_not_found(store: RequestStore, operation: str) -> None:
    with pytest.raises(NotFound):
        if operation == "renew":
            store.renew_lease(KEY, "w1", LEASE, now=T0)
        else:
            _do(store, operation)


# --- enqueue / get -------------------------------------------------------------------


def test_enqueue_stores_everything(store: RequestStore) -> None:
    record = enqueue(
        store,
        metadata={"trace": "t-1"},
        max_attempts=5,
        timeout_s=2.5,
        connection_id="c-1",
        origin_transport="channels",
        origin_address="specific.abc!xyz",
    )
    assert record.status is S.PENDING
    assert record.payload == {"rows": 3}
    assert record.metadata == {"trace": "t-1"}
    assert (record.percentage, record.message, record.attempts) == (0.0, "", 0)
    assert (record.max_attempts, record.timeout_s) == (5, 2.5)
    assert (record.created_at, record.due_at) == (T0, T0)
    assert record.due_shard == shard_for("acme#alice", "r1")
    assert record.started_at is None and record.ended_at is None and record.ttl is None
    assert (record.connection_id, record.origin_transport, record.origin_address) == (
        "c-1",
        "channels",
        "specific.abc!xyz",
    )
    assert record.key == KEY
    assert store.get(KEY) == record
    assert store.get(KEY, consistent=False) == record


def test_enqueue_defaults(store: RequestStore) -> None:
    record = enqueue(store, now=None, payload={})
    assert abs(record.created_at - base.now_ms()) < 60_000
    assert record.metadata is None and record.timeout_s is None
    assert (record.connection_id, record.origin_transport, record.origin_address) == ("", "", "")
    assert record.max_attempts == 3
    assert store.get(KEY) == record


@pytest.mark.parametrize("status", list(S))
def test_duplicate_enqueue_reports_existing_status(
    store: RequestStore, status: RequestStatus
) -> None:
    before = bring_to(store, status)
    with pytest.raises(AlreadyExists) as info:
        enqueue(store, payload={"other": True})
    assert info.value.existing_status == status.value
    assert store.get(KEY) == before  # nothing overwritten


@pytest.mark.parametrize(
    "other",
    [
        RequestKey("acme", "bob", "r1"),  # same id, another user
        RequestKey("globex", "alice", "r1"),  # same user id, another tenant
        RequestKey("acme", "alice#x", "r1"),  # '#' in a user id cannot clash
        RequestKey("acme", "alice", "r1#x"),
    ],
)
def test_request_ids_are_scoped_to_the_user(store: RequestStore, other: RequestKey) -> None:
    enqueue(store)
    enqueue(store, other, payload={"who": "other"})
    assert store.get(other).payload == {"who": "other"}
    assert store.get(KEY).payload == {"rows": 3}
    store.cancel(other)
    assert store.get(KEY).status is S.PENDING


def test_get_missing_is_not_found(store: RequestStore) -> None:
    enqueue(store)
    with pytest.raises(NotFound):
        store.get(RequestKey("acme", "bob", "r1"))  # someone else's id


def test_enqueue_race_lost_to_a_deleted_item_has_no_status(
    store: RequestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue(store)
    monkeypatch.setattr(RequestStore, "_find", lambda self, key, consistent=True: None)
    with pytest.raises(AlreadyExists) as info:
        enqueue(store)
    assert info.value.existing_status is None


# --- claim / lease -------------------------------------------------------------------


def test_claim_sets_lease(store: RequestStore) -> None:
    enqueue(store)
    record = store.claim(KEY, "w1", LEASE, now=T0 + 5)
    assert record is not None
    assert record.status is S.PROCESSING
    assert (record.lease_owner, record.lease_expires_at) == ("w1", T0 + 5 + LEASE)
    assert record.due_at == T0 + 5 + LEASE  # the lease expiry makes it due again
    assert (record.attempts, record.started_at) == (1, T0 + 5)
    assert store.get(KEY) == record


@pytest.mark.parametrize(
    ("setup", "now", "claimed"),
    [
        ("pending", T0 - 1, False),  # not due yet
        ("pending", T0, True),
        ("claimed", T0 + LEASE - 1, False),  # another worker holds a valid lease
        ("claimed", T0 + LEASE, True),  # lease expired: reclaim
        ("retrying", T0 + 9, False),  # retry time not reached
        ("retrying", T0 + 10, True),
        ("missing", T0, False),
    ],
)
def test_claim_conditions(store: RequestStore, setup: str, now: int, claimed: bool) -> None:
    if setup == "pending":
        bring_to(store, S.PENDING)
    elif setup == "claimed":
        bring_to(store, S.PROCESSING)
    elif setup == "retrying":
        bring_to(store, S.RETRYING)
    record = store.claim(KEY, "w2", LEASE, now=now)
    if not claimed:
        assert record is None
        return
    assert record is not None
    assert (record.status, record.lease_owner) == (S.PROCESSING, "w2")


def test_expired_lease_reclaim_stops_the_old_worker(store: RequestStore) -> None:
    bring_to(store, S.PROCESSING)
    record = store.claim(KEY, "w2", LEASE, now=T0 + LEASE + 1)
    assert record is not None
    assert (record.attempts, record.started_at, record.lease_owner) == (2, T0, "w2")
    with pytest.raises(InvalidTransition) as info:
        store.renew_lease(KEY, "w1", LEASE, now=T0 + LEASE + 2)
    assert info.value.current_status == "PROCESSING"
    with pytest.raises(InvalidTransition):
        store.update_progress(KEY, 50, worker_id="w1")
    with pytest.raises(InvalidTransition):
        store.complete(KEY, {"late": True}, worker_id="w1")
    with pytest.raises(InvalidTransition):
        store.fail(KEY, "PROCESSING_FAILED", "late", worker_id="w1")
    with pytest.raises(InvalidTransition):
        store.schedule_retry(KEY, T0, "TIMEOUT", "late", worker_id="w1")
    done = store.complete(KEY, {"n": 2}, worker_id="w2", now=T0 + LEASE + 3)
    assert done.result == {"n": 2}


def test_renew_lease(store: RequestStore) -> None:
    bring_to(store, S.PROCESSING)
    record = store.renew_lease(KEY, "w1", 20_000, now=T0 + 20_000)
    assert record.lease_expires_at == record.due_at == T0 + 40_000
    assert store.claim(KEY, "w2", LEASE, now=T0 + LEASE) is None  # still renewed


def test_renew_after_cancel_stops_the_worker(store: RequestStore) -> None:
    bring_to(store, S.PROCESSING)
    store.cancel(KEY)
    with pytest.raises(InvalidTransition) as info:
        store.renew_lease(KEY, "w1", LEASE)
    assert info.value.current_status == "CANCELLED"
    with pytest.raises(InvalidTransition) as info:
        store.update_progress(KEY, 90, worker_id="w1")
    assert info.value.current_status == "CANCELLED"


# --- progress ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("updates", "stored"),
    [
        ([10, 50, 30, 60], [10.0, 50.0, 50.0, 60.0]),
        ([-5, 150, 99], [0.0, 100.0, 100.0]),
        ([12.5, 12.5, 12.25], [12.5, 12.5, 12.5]),
    ],
)
def test_progress_never_decreases(
    store: RequestStore, updates: list[float], stored: list[float]
) -> None:
    bring_to(store, S.PROCESSING)
    for value, expected in zip(updates, stored, strict=True):
        assert store.update_progress(KEY, value, f"at {value}").percentage == expected
        assert store.get(KEY).percentage == expected


def test_progress_persists_message_and_details(store: RequestStore) -> None:
    bring_to(store, S.PROCESSING)
    record = store.update_progress(KEY, 40, "rows 4/10", {"rows": 4}, worker_id="w1")
    assert (record.percentage, record.message, record.details) == (40.0, "rows 4/10", {"rows": 4})
    assert store.get(KEY) == record
    lower = store.update_progress(KEY, 20, "ignored", {"rows": 2})
    assert lower == record
    record = store.update_progress(KEY, 40, "same percentage, new message")
    assert (record.message, record.details) == ("same percentage, new message", None)


@pytest.mark.parametrize("status", [S.PENDING, S.RETRYING, S.COMPLETED, S.FAILED, S.CANCELLED])
def test_progress_only_while_processing(store: RequestStore, status: RequestStatus) -> None:
    before = bring_to(store, status)
    with pytest.raises(InvalidTransition) as info:
        store.update_progress(KEY, 50)
    assert info.value.current_status == status.value
    assert store.get(KEY) == before


def test_progress_of_missing_request(store: RequestStore) -> None:
    with pytest.raises(NotFound):
        store.update_progress(KEY, 5)


# --- endings -------------------------------------------------------------------------


@pytest.mark.parametrize("result", [{"rows": [1, 2, 3]}, [1, "two"], "text", 0, None])
def test_complete_persists_result(store: RequestStore, result: Any) -> None:
    bring_to(store, S.PROCESSING)
    store.update_progress(KEY, 30)
    record = store.complete(KEY, result, worker_id="w1", now=T0 + 100)
    assert (record.status, record.percentage, record.result) == (S.COMPLETED, 100.0, result)
    assert record.error is None
    assert store.get(KEY) == record


def test_retry_then_complete_clears_the_error(store: RequestStore) -> None:
    retrying = bring_to(store, S.RETRYING)
    assert (retrying.due_at, retrying.lease_owner, retrying.lease_expires_at) == (
        T0 + 10,
        None,
        None,
    )
    assert retrying.error == {"code": "TIMEOUT", "message": "took too long"}
    claimed = store.claim(KEY, "w3", LEASE, now=T0 + 10)
    assert claimed is not None and claimed.attempts == 2
    record = store.complete(KEY, {"ok": 1}, worker_id="w3")
    assert record.error is None


def test_fail_persists_error(store: RequestStore) -> None:
    bring_to(store, S.PROCESSING)
    record = store.fail(KEY, "PROCESSING_FAILED", "x" * 5000, worker_id="w1", now=T0 + 7)
    assert record.error == {"code": "PROCESSING_FAILED", "message": "x" * 1000}
    assert store.get(KEY).error == record.error


def test_fail_from_retrying_ignores_worker_id(store: RequestStore) -> None:
    bring_to(store, S.RETRYING)
    assert store.fail(KEY, "PROCESSING_FAILED", "gave up", worker_id="w9").status is S.FAILED


def test_cancel_sets_cancelled_error(store: RequestStore) -> None:
    bring_to(store, S.PROCESSING)
    record = store.cancel(KEY, now=T0 + 3)
    assert record.error == {"code": "CANCELLED", "message": "Request cancelled"}
    with pytest.raises(InvalidTransition) as info:
        store.cancel(KEY)
    assert info.value.current_status == "CANCELLED"
    with pytest.raises(InvalidTransition):
        store.complete(KEY, {"too": "late"}, worker_id="w1")
    assert store.get(KEY) == record


# --- public record -------------------------------------------------------------------

BASE_KEYS = {
    "request_id",
    "action",
    "status",
    "percentage",
    "message",
    "created_at",
    "started_at",
    "ended_at",
}


@pytest.mark.parametrize(
    ("status", "extra"),
    [
        (S.PENDING, {}),
        (S.PROCESSING, {}),
        (S.RETRYING, {}),
        (S.COMPLETED, {"result": {"ok": True}}),
        (S.FAILED, {"error": {"code": "PROCESSING_FAILED", "message": "boom"}}),
        (S.CANCELLED, {"error": {"code": "CANCELLED", "message": "Request cancelled"}}),
    ],
)
def test_public_record_shape(
    store: RequestStore, status: RequestStatus, extra: dict[str, Any]
) -> None:
    public = bring_to(store, status).public()
    assert set(public) == BASE_KEYS | set(extra)
    assert public["status"] == status.value
    assert (public["request_id"], public["action"], public["created_at"]) == (
        "r1",
        "report.run",
        T0,
    )
    for key, value in extra.items():
        assert public[key] == value
    assert (
        public["ended_at"] is None if status not in FINAL else isinstance(public["ended_at"], int)
    )
    assert public["started_at"] is None if status in (S.PENDING, S.CANCELLED) else T0
    orjson.dumps(public)  # JSON-ready


def test_public_record_without_stored_error() -> None:
    record = RequestRecord(
        **{**_record_fields(), "status": S.FAILED, "error": None},
    )
    assert record.public()["error"] == {"code": "PROCESSING_FAILED", "message": "Request failed"}
    cancelled = RequestRecord(**{**_record_fields(), "status": S.CANCELLED, "error": None})
    assert cancelled.public()["error"]["code"] == "CANCELLED"
    assert cancelled.is_final and not RequestRecord(**_record_fields()).is_final


def _record_fields() -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "user_id": "alice",
        "request_id": "r1",
        "action": "a",
        "status": S.PENDING,
        "payload": {},
        "metadata": None,
        "percentage": 0.0,
        "message": "",
        "details": None,
        "result": None,
        "error": None,
        "attempts": 0,
        "max_attempts": 3,
        "timeout_s": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "created_at": T0,
        "started_at": None,
        "ended_at": None,
        "connection_id": "",
        "origin_transport": "",
        "origin_address": "",
    }


# --- keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        KEY,
        RequestKey("acme", "a#b", "c"),
        RequestKey("acme", "a", "b#c"),
        RequestKey("acme", "100%", "%23 é/ü"),
    ],
)
def test_key_string_round_trip(key: RequestKey) -> None:
    text = key.as_string()
    assert RequestKey.from_string(text) == key
    assert text.count("#") == 2


def test_key_strings_are_unique() -> None:
    keys = [RequestKey("t", "a#b", "c"), RequestKey("t", "a", "b#c"), RequestKey("t", "a", "b%23c")]
    assert len({key.as_string() for key in keys}) == 3
    assert KEY.as_string() == "acme#alice#r1"
    assert KEY.owner == "acme#alice"


@pytest.mark.parametrize("text", ["", "a#b", "a#b#c#d", "a##c", None, 42])
def test_bad_key_strings(text: Any) -> None:
    with pytest.raises(ValidationError):
        RequestKey.from_string(text)


def test_json_attribute_round_trip() -> None:
    attr = JSONValueAttribute()
    value = {"a": [1, 2.5, "x", None, True], "é": {}}
    assert attr.deserialize(attr.serialize(value)) == value


# --- listing -------------------------------------------------------------------------


def _fill(store: RequestStore, count: int, user: str = "alice") -> list[RequestKey]:
    keys = []
    for i in range(count):
        key = RequestKey("acme", user, f"r{i:02d}")
        enqueue(store, key, now=T0 + i)
        keys.append(key)
    return keys


def _all_pages(
    store: RequestStore, limit: int, status: RequestStatus | str | None = None
) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = store.list_by_user("acme", "alice", status=status, limit=limit, cursor=cursor)
        pages.append([record.request_id for record in page.items])
        cursor = page.cursor
        if cursor is None:
            return pages


@pytest.mark.parametrize(
    ("count", "limit", "expected_sizes"),
    [(7, 3, [3, 3, 1]), (6, 3, [3, 3]), (2, 20, [2]), (0, 5, [0]), (5, 1, [1, 1, 1, 1, 1])],
)
def test_list_by_user_pages_newest_first(
    store: RequestStore, count: int, limit: int, expected_sizes: list[int]
) -> None:
    _fill(store, count)
    _fill(store, 3, user="bob")  # never visible to alice
    pages = _all_pages(store, limit)
    assert [len(page) for page in pages] == expected_sizes
    assert [rid for page in pages for rid in page] == [f"r{i:02d}" for i in reversed(range(count))]


@pytest.mark.parametrize("limit", [1, 2, 5, 100])
def test_list_by_user_status_filter_fills_pages(store: RequestStore, limit: int) -> None:
    keys = _fill(store, 12)
    cancelled = [key.request_id for key in keys[::3]]  # r00 r03 r06 r09
    for key in keys[::3]:
        store.cancel(key)
    pages = _all_pages(store, limit, status="CANCELLED")
    assert [rid for page in pages for rid in page] == list(reversed(cancelled))
    assert all(len(page) == limit for page in pages[:-1])
    pending = _all_pages(store, limit, status=S.PENDING)
    assert len([rid for page in pending for rid in page]) == 8


def test_list_by_user_scan_cap_bounds_each_call(
    store: RequestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status filter matching only the oldest of a long history: each call examines
    at most MAX_USER_SCAN items (a bounded number of queries) and returns a cursor."""
    import storage.requests.store as store_module

    keys = _fill(store, 12)
    store.cancel(keys[0])  # the oldest
    monkeypatch.setattr(store_module, "MAX_LIST_LIMIT", 4)
    monkeypatch.setattr(store_module, "MAX_USER_SCAN", 5)
    queries: list[str] = []
    real = botocore.client.BaseClient._make_api_call

    def counted(client: Any, operation: str, params: Any) -> Any:
        queries.append(operation)
        return real(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counted)
    pages, cursor, per_call = [], None, []
    while True:
        queries.clear()
        page = store.list_by_user("acme", "alice", status=S.CANCELLED, limit=2, cursor=cursor)
        per_call.append(queries.count("Query"))
        pages.append([r.request_id for r in page.items])
        cursor = page.cursor
        if cursor is None:
            break
    # 12 items, 5 examined per call: r11-r07, r06-r02, r01-r00.
    assert pages == [[], [], ["r00"]]
    # 5 examined + 1 peeked, 5 per query page: never more than 2 queries per call.
    assert max(per_call) <= 2


def test_list_by_user_empty_filter(store: RequestStore) -> None:
    _fill(store, 3)
    page = store.list_by_user("acme", "alice", status=S.FAILED)
    assert (page.items, page.cursor) == ([], None)


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!not-base64!!!",
        "bm90IGpzb24",  # "not json"
        _b64([1, 2]),
        _b64({"r": "r1"}),
        _b64({"r": "r1", "c": "soon"}),
        _b64({"r": "", "c": 1}),
        _b64({"r": "r1", "c": True}),
        _b64({"r": "r1", "c": -1}),
        _b64({"r": "r1", "c": 1, "owner": "acme#bob"}),
        _b64({"r": "r" * 129, "c": 1}),
        _b64({"r": "r1", "c": 1.5}),
        _b64({"r": 7, "c": 1}),
    ],
)
def test_list_by_user_bad_cursor(cursor: str) -> None:
    with pytest.raises(ValidationError):
        request_store.list_by_user("acme", "alice", cursor=cursor)


# --- queue ---------------------------------------------------------------------------


def test_list_due_merges_shards_oldest_first(store: RequestStore) -> None:
    due_times = [T0 + offset for offset in (50, 10, 40, 0, 30, 20, 70, 60, 90, 80, 5, 15)]
    keys = []
    for i, due in enumerate(due_times):
        key = RequestKey("acme", f"u{i}", f"r{i}")
        enqueue(store, key, now=due)
        keys.append(key)
    assert len({shard_for(k.owner, k.request_id) for k in keys}) == 4  # every shard used
    enqueue(store, RequestKey("acme", "later", "r"), now=T0 + 10_000)  # not due yet
    done = RequestKey("acme", "done", "r")
    enqueue(store, done, now=T0)
    store.cancel(done)  # final: gone from the index

    due = store.list_due(now=T0 + 100)
    assert [r.due_at for r in due] == sorted(due_times)
    assert {r.key for r in due} == set(keys)
    assert [r.due_at for r in store.list_due(now=T0 + 100, limit=5)] == sorted(due_times)[:5]
    assert [r.due_at for r in store.list_due(now=T0 + 35)] == [
        t for t in sorted(due_times) if t <= T0 + 35
    ]
    assert store.list_due(now=T0 - 1) == []


def test_list_due_includes_expired_leases_and_list_pending_does_not(store: RequestStore) -> None:
    held, expired, waiting = (RequestKey("acme", "alice", rid) for rid in ("held", "exp", "wait"))
    enqueue(store, held, now=T0)
    enqueue(store, expired, now=T0)
    enqueue(store, waiting, now=T0 + 500)
    assert store.claim(held, "w1", 10_000, now=T0) is not None
    assert store.claim(expired, "w1", 100, now=T0) is not None
    due = store.list_due(now=T0 + 1_000)
    assert [(r.request_id, r.status) for r in due] == [
        ("exp", S.PROCESSING),  # lease expired at T0+100
        ("wait", S.PENDING),
    ]
    assert [r.request_id for r in store.list_pending(now=T0 + 1_000)] == ["wait"]
    assert [r.request_id for r in store.list_pending(now=T0 + 20_000)] == ["wait"]
    later = store.list_due(now=T0 + 20_000)
    assert [r.request_id for r in later] == ["exp", "wait", "held"]
    assert store.list_pending(limit=1, now=T0 + 20_000)[0].request_id == "wait"
    reclaimed = store.claim(expired, "w2", LEASE, now=T0 + 1_000)
    assert reclaimed is not None and reclaimed.lease_owner == "w2"


def test_list_due_with_more_shards(store: RequestStore) -> None:
    keys = [RequestKey("acme", "u", f"r{i}") for i in range(10)]
    for i, key in enumerate(keys):
        enqueue(store, key, now=T0 + i, shards=8)
    records = store.list_due(now=T0 + 100, shards=8)
    assert [r.key for r in records] == keys
    assert len({r.due_shard for r in records}) > 4
    assert all(r.due_shard == shard_for(r.key.owner, r.request_id, 8) for r in records)


@pytest.mark.parametrize(
    ("backlog", "page", "pages", "found"),
    [
        (0, 250, 5, True),  # nothing to look past
        (12, 250, 5, True),  # one page holds the whole backlog
        (12, 5, 3, True),  # three pages of five reach past twelve entries
        (12, 5, 2, False),  # the bound: two pages of five stop before the other tenant
    ],
)
def test_list_due_finds_other_tenants_past_an_excluded_backlog(
    store: RequestStore,
    monkeypatch: pytest.MonkeyPatch,
    backlog: int,
    page: int,
    pages: int,
    found: bool,
) -> None:
    monkeypatch.setattr(store_module, "DUE_SCAN_PAGE", page)
    monkeypatch.setattr(store_module, "DUE_SCAN_PAGES", pages)
    for i in range(backlog):  # older than the other tenants' requests
        enqueue(store, RequestKey("hog", f"u{i % 3}", f"h{i}"), now=T0 + i, shards=1)
    other = enqueue(store, RequestKey("acme", "bob", "b1"), now=T0 + 100, shards=1)
    third = enqueue(store, RequestKey("initech", "eve", "e1"), now=T0 + 101, shards=1)

    unfiltered = store.list_due(now=T0 + 1_000, limit=2, shards=1)
    assert [r.tenant_id for r in unfiltered] == (["hog", "hog"] if backlog else ["acme", "initech"])
    due = store.list_due(now=T0 + 1_000, limit=2, shards=1, exclude_tenants={"hog"})
    assert [r.key for r in due] == ([other.key, third.key] if found else [])
    only_third = store.list_due(
        now=T0 + 1_000, limit=2, shards=1, exclude_tenants=["hog", "acme", "hog"]
    )
    assert [r.key for r in only_third] == ([third.key] if found else [])


def test_list_due_excludes_more_tenants_than_one_condition_holds(store: RequestStore) -> None:
    excluded = [f"t{i:03d}" for i in range(150)]  # DynamoDB: at most 100 values per IN
    for tenant in (excluded[0], excluded[120], "acme"):
        enqueue(store, RequestKey(tenant, "u", "r"), now=T0)
    due = store.list_due(now=T0 + 1, exclude_tenants=excluded)
    assert [r.tenant_id for r in due] == ["acme"]


def test_default_list_due_uses_the_clock(store: RequestStore) -> None:
    record = enqueue(store, now=None)
    assert [r.key for r in store.list_due()] == [record.key]
    assert [r.key for r in store.list_pending()] == [record.key]
    claimed = store.claim(KEY, "w1", LEASE)
    assert claimed is not None and claimed.started_at is not None


# --- batch_get -----------------------------------------------------------------------


def test_batch_get(store: RequestStore) -> None:
    keys = _fill(store, 4)
    missing = RequestKey("acme", "alice", "nope")
    wanted = [keys[2], missing, keys[0], keys[2], RequestKey("acme", "bob", "r01"), keys[3]]
    records = store.batch_get(wanted)
    assert [r.key for r in records] == [keys[2], keys[0], keys[3]]
    assert records[0] == store.get(keys[2])
    assert store.batch_get([missing]) == []
    assert [r.key for r in store.batch_get([keys[1]], consistent=True)] == [keys[1]]


def test_batch_get_more_than_one_batch(store: RequestStore) -> None:
    keys = _fill(store, 0)
    keys = [RequestKey("acme", "alice", f"r{i:03d}") for i in range(130)]
    for key in keys:
        enqueue(store, key)
    assert [r.key for r in store.batch_get(list(reversed(keys)))] == list(reversed(keys))


def test_batch_get_nothing_makes_no_call() -> None:
    assert request_store.batch_get([]) == []


# --- admin: requeue and the tenant list (operator overrides, docs/admin.md) ----------


@pytest.mark.parametrize("start", list(S))
def test_requeue_only_from_failed_or_cancelled(store: RequestStore, start: RequestStatus) -> None:
    before = bring_to(store, start)
    if start not in (S.FAILED, S.CANCELLED):
        with pytest.raises(InvalidTransition) as info:
            store.requeue(KEY, now=T0 + 50)
        assert info.value.current_status == start.value
        assert store.get(KEY) == before
        return
    record = store.requeue(KEY, now=T0 + 50)
    assert record.status is S.PENDING
    assert (record.attempts, record.percentage, record.message) == (0, 0.0, "")
    assert (record.error, record.result, record.details) == (None, None, None)
    assert (record.started_at, record.ended_at, record.ttl) == (None, None, None)
    assert (record.lease_owner, record.lease_expires_at) == (None, None)
    assert (record.due_at, record.requeued_at) == (T0 + 50, T0 + 50)
    assert record.due_shard == shard_for(KEY.owner, KEY.request_id)
    assert (record.created_at, record.payload) == (before.created_at, before.payload)
    assert store.get(KEY) == record
    assert [r.key for r in store.list_pending(now=T0 + 50)] == [KEY]
    claimed = store.claim(KEY, "w9", LEASE, now=T0 + 60)
    assert claimed is not None and claimed.attempts == 1


def test_requeue_missing_is_not_found(store: RequestStore) -> None:
    with pytest.raises(NotFound):
        store.requeue(KEY)


def _fill_tenant(store: RequestStore) -> list[RequestKey]:
    """Nine requests of three users of acme (newest last), two of another tenant."""
    keys = []
    for i in range(9):
        key = RequestKey("acme", f"user#{i % 3}", f"r{i}")
        enqueue(store, key, now=T0 + i)
        keys.append(key)
    for i in range(2):
        enqueue(store, RequestKey("globex", "user#0", f"g{i}"), now=T0 + 100 + i)
    return keys


def _tenant_pages(store: RequestStore, limit: int, status: Any = None) -> list[list[RequestKey]]:
    pages, cursor = [], None
    while True:
        page = store.list_by_tenant("acme", status=status, limit=limit, cursor=cursor)
        pages.append([record.key for record in page.items])
        cursor = page.cursor
        if cursor is None:
            return pages


@pytest.mark.parametrize(
    ("limit", "sizes"), [(4, [4, 4, 1]), (3, [3, 3, 3]), (9, [9]), (20, [9]), (1, [1] * 9)]
)
def test_list_by_tenant_pages_newest_first(
    store: RequestStore, limit: int, sizes: list[int]
) -> None:
    keys = _fill_tenant(store)
    pages = _tenant_pages(store, limit)
    assert [len(page) for page in pages] == sizes
    assert [key for page in pages for key in page] == list(reversed(keys))


@pytest.mark.parametrize("limit", [1, 2, 10])
def test_list_by_tenant_status_filter(store: RequestStore, limit: int) -> None:
    keys = _fill_tenant(store)
    for key in keys[1::3]:
        store.cancel(key)
    pages = _tenant_pages(store, limit, status="CANCELLED")
    assert [key for page in pages for key in page] == list(reversed(keys[1::3]))
    assert store.list_by_tenant("acme", status=S.FAILED).items == []


def test_list_by_tenant_scan_cap_returns_a_cursor(
    store: RequestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage.requests.store as store_module

    keys = _fill_tenant(store)
    store.cancel(keys[0])  # the oldest
    # Filtered pages read index entries 4 at a time and stop after 3 were examined.
    monkeypatch.setattr(store_module, "MAX_LIST_LIMIT", 4)
    monkeypatch.setattr(store_module, "MAX_TENANT_SCAN", 3)
    first = store.list_by_tenant("acme", status=S.CANCELLED, limit=2)
    assert first.items == [] and first.cursor is not None  # r8..r5 examined, no match
    records, cursor = [], first.cursor
    while cursor is not None:
        page = store.list_by_tenant("acme", status=S.CANCELLED, limit=2, cursor=cursor)
        records += page.items
        cursor = page.cursor
    assert [r.key for r in records] == [keys[0]]


def test_list_by_tenant_skips_items_gone_from_the_table(
    store: RequestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = _fill_tenant(store)
    real = RequestStore.batch_get

    def lagging(self: RequestStore, wanted: list[RequestKey], consistent: bool = False) -> Any:
        return [r for r in real(self, wanted, consistent) if r.key != keys[8]]

    monkeypatch.setattr(RequestStore, "batch_get", lagging)
    page = store.list_by_tenant("acme", limit=3)
    assert [r.key for r in page.items] == [keys[7], keys[6], keys[5]]  # the page is refilled
    assert page.cursor is not None


@pytest.mark.parametrize(
    "cursor",
    [
        _b64({"u": "alice", "r": "r1"}),
        _b64({"u": "", "r": "r1", "c": 1}),
        _b64({"u": "alice", "r": "", "c": 1}),
        _b64({"u": "alice", "r": "r1", "c": "x"}),
        _b64({"u": "alice", "r": "r1", "c": False}),
        _b64({"u": 5, "r": "r1", "c": 1}),
        _b64({"u": "u" * 257, "r": "r1", "c": 1}),
        _b64({"u": "alice", "r": "r1", "c": -1}),
        _b64({"u": "alice", "r": "r1", "c": 1, "t": "globex"}),
        "@@@",
    ],
)
def test_list_by_tenant_bad_cursor(cursor: str) -> None:
    with pytest.raises(ValidationError):
        request_store.list_by_tenant("acme", cursor=cursor)


# --- validation before any network call ----------------------------------------------

GOOD = {
    "tenant_id": "acme",
    "user_id": "alice",
    "request_id": "r1",
    "action": "report.run",
    "payload": {},
}


def _enqueue(**overrides: Any) -> Callable[[RequestStore], Any]:
    return lambda s: s.enqueue(**{**GOOD, **overrides})


BAD_CALLS: list[tuple[str, Callable[[RequestStore], Any]]] = [
    ("tenant empty", _enqueue(tenant_id="")),
    ("tenant #", _enqueue(tenant_id="ac#me")),
    ("tenant long", _enqueue(tenant_id="t" * 65)),
    ("user none", _enqueue(user_id=None)),
    ("request id long", _enqueue(request_id="r" * 129)),
    ("action chars", _enqueue(action="bad action")),
    ("action long", _enqueue(action="a" * 65)),
    ("action type", _enqueue(action=5)),
    ("payload list", _enqueue(payload=[1])),
    ("payload not json", _enqueue(payload={"x": object()})),
    ("payload too big", _enqueue(payload={"x": "y" * (128 * 1024)})),
    ("metadata list", _enqueue(metadata=["x"])),
    ("metadata big", _enqueue(metadata={"x": "y" * 9000})),
    ("max_attempts 0", _enqueue(max_attempts=0)),
    ("max_attempts bool", _enqueue(max_attempts=True)),
    ("max_attempts big", _enqueue(max_attempts=1000)),
    ("timeout 0", _enqueue(timeout_s=0)),
    ("timeout str", _enqueue(timeout_s="5")),
    ("timeout bool", _enqueue(timeout_s=True)),
    ("connection type", _enqueue(connection_id=5)),
    ("transport long", _enqueue(origin_transport="x" * 65)),
    ("shards 0", _enqueue(shards=0)),
    ("now negative", _enqueue(now=-1)),
    ("now float", _enqueue(now=1.5)),
    ("get not a key", lambda s: s.get(("acme", "alice", "r1"))),
    ("get bad key", lambda s: s.get(RequestKey("acme", "", "r1"))),
    ("get # tenant", lambda s: s.get(RequestKey("a#b", "alice", "r1"))),
    ("batch bad key", lambda s: s.batch_get([KEY, RequestKey("acme", "alice", "")])),
    ("claim worker", lambda s: s.claim(KEY, "", LEASE)),
    ("claim lease", lambda s: s.claim(KEY, "w", 0)),
    ("claim key", lambda s: s.claim(RequestKey("", "a", "b"), "w", LEASE)),
    ("renew lease", lambda s: s.renew_lease(KEY, "w", -5)),
    ("renew worker", lambda s: s.renew_lease(KEY, None, 5)),
    ("progress nan", lambda s: s.update_progress(KEY, float("nan"))),
    ("progress str", lambda s: s.update_progress(KEY, "50")),
    ("progress bool", lambda s: s.update_progress(KEY, True)),
    ("progress message", lambda s: s.update_progress(KEY, 5, message=None)),
    ("progress details", lambda s: s.update_progress(KEY, 5, details={"x": {1, 2}})),
    ("progress details big", lambda s: s.update_progress(KEY, 5, details="x" * 20000)),
    ("progress worker", lambda s: s.update_progress(KEY, 5, worker_id="")),
    ("complete result", lambda s: s.complete(KEY, {"x": object()})),
    ("complete big", lambda s: s.complete(KEY, "x" * (200 * 1024))),
    ("complete worker", lambda s: s.complete(KEY, {}, worker_id="")),
    ("complete now", lambda s: s.complete(KEY, {}, now=-3)),
    ("fail code", lambda s: s.fail(KEY, "", "m")),
    ("fail message", lambda s: s.fail(KEY, "X", None)),
    ("fail worker", lambda s: s.fail(KEY, "X", "m", worker_id="")),
    ("retry at", lambda s: s.schedule_retry(KEY, -1, "X", "m")),
    ("retry code", lambda s: s.schedule_retry(KEY, 5, 7, "m")),
    ("retry worker", lambda s: s.schedule_retry(KEY, 5, "X", "m", worker_id="")),
    ("cancel key", lambda s: s.cancel(RequestKey("acme", "alice", "r" * 200))),
    ("cancel now", lambda s: s.cancel(KEY, now="now")),
    ("list tenant", lambda s: s.list_by_user("", "alice")),
    ("list user", lambda s: s.list_by_user("acme", "")),
    ("list limit 0", lambda s: s.list_by_user("acme", "alice", limit=0)),
    ("list limit 101", lambda s: s.list_by_user("acme", "alice", limit=101)),
    ("list status", lambda s: s.list_by_user("acme", "alice", status="pending")),
    ("list cursor", lambda s: s.list_by_user("acme", "alice", cursor="%%%")),
    ("due limit", lambda s: s.list_due(limit=0)),
    ("due limit big", lambda s: s.list_due(limit=5000)),
    ("due shards", lambda s: s.list_due(shards=0)),
    ("due now", lambda s: s.list_due(now=-1)),
    ("due exclude", lambda s: s.list_due(exclude_tenants=["a#b"])),
    ("due exclude empty", lambda s: s.list_due(exclude_tenants=["acme", ""])),
    ("pending limit", lambda s: s.list_pending(limit=0)),
    ("requeue key", lambda s: s.requeue(RequestKey("acme", "alice", ""))),
    ("requeue shards", lambda s: s.requeue(KEY, shards=0)),
    ("tenant list tenant", lambda s: s.list_by_tenant("a#b")),
    ("tenant list limit", lambda s: s.list_by_tenant("acme", limit=101)),
    ("tenant list status", lambda s: s.list_by_tenant("acme", status="done")),
    ("tenant list cursor", lambda s: s.list_by_tenant("acme", cursor=_b64({"r": "r1", "c": 1}))),
]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("network call made before validation")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refuse)


@pytest.mark.parametrize(("name", "call"), BAD_CALLS, ids=[name for name, _ in BAD_CALLS])
def test_validation_before_any_network_call(
    no_network: None, name: str, call: Callable[[RequestStore], Any]
) -> None:
    with pytest.raises(ValidationError):
        call(request_store)


# --- storage failures ----------------------------------------------------------------

GOOD_CALLS: list[tuple[str, Callable[[RequestStore], Any]]] = [
    ("enqueue", _enqueue()),
    ("get", lambda s: s.get(KEY)),
    ("batch_get", lambda s: s.batch_get([KEY])),
    ("claim", lambda s: s.claim(KEY, "w", LEASE)),
    ("renew_lease", lambda s: s.renew_lease(KEY, "w", LEASE)),
    ("update_progress", lambda s: s.update_progress(KEY, 5)),
    ("complete", lambda s: s.complete(KEY, {})),
    ("fail", lambda s: s.fail(KEY, "X", "m")),
    ("schedule_retry", lambda s: s.schedule_retry(KEY, 5, "X", "m")),
    ("cancel", lambda s: s.cancel(KEY)),
    ("list_by_user", lambda s: s.list_by_user("acme", "alice")),
    ("list_due", lambda s: s.list_due()),
    ("list_pending", lambda s: s.list_pending()),
    ("requeue", lambda s: s.requeue(KEY)),
    ("list_by_tenant", lambda s: s.list_by_tenant("acme")),
]
GOOD_IDS = [name for name, _ in GOOD_CALLS]


@pytest.fixture
def unreachable() -> Iterator[None]:
    port = localserver.free_port()  # nobody listens there
    base.configure(
        base.StoreConfig(
            endpoint_url=f"http://127.0.0.1:{port}",
            connect_timeout_s=1,
            read_timeout_s=1,
            max_retry_attempts=0,
        )
    )
    yield


@pytest.mark.parametrize(("name", "call"), GOOD_CALLS, ids=GOOD_IDS)
def test_unreachable_storage(
    unreachable: None, name: str, call: Callable[[RequestStore], Any]
) -> None:
    with pytest.raises(StorageUnavailable) as info:
        call(request_store)
    assert "127.0.0.1" not in str(info.value)


def _failing_client(monkeypatch: pytest.MonkeyPatch, code: str) -> list[str]:
    calls: list[str] = []

    def fail(self: Any, operation: str, params: dict[str, Any]) -> Any:
        calls.append(operation)
        raise ClientError({"Error": {"Code": code, "Message": "Rate exceeded"}}, operation)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", fail)
    return calls


@pytest.mark.parametrize(("name", "call"), GOOD_CALLS, ids=GOOD_IDS)
@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException"])
def test_throttling_is_storage_unavailable(
    moto_dynamodb: base.StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
    code: str,
    name: str,
    call: Callable[[RequestStore], Any],
) -> None:
    calls = _failing_client(monkeypatch, code)
    with pytest.raises(StorageUnavailable) as info:
        call(request_store)
    assert "Rate exceeded" not in str(info.value)
    assert calls


@pytest.mark.parametrize(("name", "call"), GOOD_CALLS, ids=GOOD_IDS)
def test_rejected_requests_are_store_errors_without_library_text(
    moto_dynamodb: base.StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    call: Callable[[RequestStore], Any],
) -> None:
    _failing_client(monkeypatch, "ValidationException")
    with pytest.raises(StoreError) as info:
        call(request_store)
    assert not isinstance(info.value, StorageUnavailable | ValidationError)
    assert "Rate exceeded" not in str(info.value)


def test_model_is_registered_under_requests() -> None:
    assert RequestModel in base.registered_models()
    assert RequestModel.Meta.base_table_name == "requests"  # type: ignore[attr-defined]
    assert {"by_created", "due"} <= set(RequestModel._indexes)
