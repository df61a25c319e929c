"""Active-request quotas (storage/requests/quota.py) through the request store, against
moto AND dynalite: limits, release on every ending, duplicates, self-healing of leaked
holds, and storage failures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from storage import base, localserver
from storage.errors import (
    AlreadyExists,
    NotFound,
    StorageUnavailable,
    StoreError,
    ValidationError,
)
from storage.requests import RequestKey, RequestRecord, RequestStatus, RequestStore
from storage.requests.quota import (
    LEAK_GRACE_MS,
    MAX_USER_LIMIT,
    QuotaExceeded,
    QuotaLimits,
    QuotaModel,
    QuotaStore,
    user_member,
)

S = RequestStatus
T0 = 1_700_000_000_000
LIMITS = QuotaLimits(per_user=3, per_tenant=5)


@pytest.fixture
def store(dynamodb: base.StoreConfig) -> RequestStore:
    return RequestStore(heal_cooldown_s=0)


def enqueue(
    store: RequestStore,
    user: str,
    request_id: str,
    *,
    now: int = T0,
    limits: QuotaLimits | None = LIMITS,
    tenant: str = "acme",
) -> RequestRecord:
    return store.enqueue(
        tenant_id=tenant,
        user_id=user,
        request_id=request_id,
        action="report.run",
        payload={},
        now=now,
        limits=limits,
    )


def held(store: RequestStore, user: str | None = None, tenant: str = "acme") -> int:
    return len(store.quotas.held(tenant, user))


# --- limits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("users", "scope", "limit"),
    [
        (["alice"] * 4, "user", 3),  # one user: its own limit first
        (["alice", "alice", "bob", "bob", "carol", "carol"], "tenant", 5),  # many users
    ],
    ids=["user", "tenant"],
)
def test_the_request_past_a_limit_is_refused_and_stores_nothing(
    store: RequestStore, users: list[str], scope: str, limit: int
) -> None:
    *accepted, last = users
    for i, user in enumerate(accepted):
        enqueue(store, user, f"r{i}", now=T0 + i)
    with pytest.raises(QuotaExceeded) as info:
        enqueue(store, last, "over", now=T0 + 50)
    assert (info.value.scope, info.value.limit) == (scope, limit)
    with pytest.raises(NotFound):
        store.get(RequestKey("acme", last, "over"))
    assert held(store) == len(accepted)
    assert held(store, last) == users.count(last) - 1  # the refused one holds nothing


def test_quotas_of_tenants_and_users_are_separate(store: RequestStore) -> None:
    for i in range(3):
        enqueue(store, "alice", f"a{i}", now=T0 + i)
        enqueue(store, "alice", f"g{i}", now=T0 + i, tenant="globex")  # same user id
    assert (held(store, "alice"), held(store, "alice", "globex")) == (3, 3)


def test_requests_without_limits_are_not_counted(store: RequestStore) -> None:
    for i in range(5):
        enqueue(store, "alice", f"r{i}", limits=None)
    enqueue(store, "alice", "counted")
    assert held(store, "alice") == 1


@pytest.mark.parametrize(
    "end",
    [
        lambda s, k: s.cancel(k, now=T0 + 5),
        lambda s, k: (s.claim(k, "w", 30_000, now=T0 + 1), s.complete(k, 1, worker_id="w"))[1],
        lambda s, k: (s.claim(k, "w", 30_000, now=T0 + 1), s.fail(k, "X", "x", worker_id="w"))[1],
        lambda s, k: (
            s.claim(k, "w", 30_000, now=T0 + 1),
            s.schedule_retry(k, T0 + 2, "X", "x", worker_id="w"),
            s.fail(k, "X", "used up its attempts"),
        )[2],
    ],
    ids=["cancel", "complete", "fail", "fail-after-retry"],
)
def test_every_ending_gives_the_hold_back(
    store: RequestStore, end: Callable[[RequestStore, RequestKey], RequestRecord]
) -> None:
    for i in range(3):
        enqueue(store, "alice", f"r{i}", now=T0 + i)
    ended = end(store, RequestKey("acme", "alice", "r1"))
    assert ended.is_final
    assert held(store, "alice") == 2 and held(store) == 2
    enqueue(store, "alice", "next", now=T0 + 10)  # room again
    assert held(store, "alice") == 3


def test_while_retrying_a_request_still_counts(store: RequestStore) -> None:
    key = enqueue(store, "alice", "r").key
    store.claim(key, "w", 30_000, now=T0 + 1)
    store.schedule_retry(key, T0 + 2, "X", "x", worker_id="w")
    assert held(store, "alice") == 1


def test_a_users_item_is_deleted_once_it_holds_nothing(store: RequestStore) -> None:
    key = enqueue(store, "alice", "r").key
    store.cancel(key, now=T0 + 1)
    with pytest.raises(QuotaModel.DoesNotExist):
        QuotaModel.get("acme", "user#alice", consistent_read=True)
    assert held(store) == 0


def test_release_is_idempotent_and_frees_only_its_own_hold(store: RequestStore) -> None:
    first = enqueue(store, "alice", "r1")
    enqueue(store, "alice", "r2", now=T0 + 1)
    for _ in range(2):
        store.quotas.release(first.key, first.created_at)
    assert store.quotas.held("acme", "alice") == {user_member("r2", T0 + 1)}
    assert held(store) == 1


# --- duplicates -----------------------------------------------------------------------


@pytest.mark.parametrize("later_ms", [0, 7], ids=["same-ms", "later"])
def test_a_duplicate_id_is_counted_once_and_keeps_the_original_hold(
    store: RequestStore, later_ms: int
) -> None:
    enqueue(store, "alice", "r")
    with pytest.raises(AlreadyExists) as info:
        enqueue(store, "alice", "r", now=T0 + later_ms)
    assert info.value.existing_status == "PENDING"
    assert store.quotas.held("acme", "alice") == {user_member("r", T0)}
    assert held(store) == 1


def test_acquiring_the_same_attempt_twice_takes_nothing_the_second_time(
    store: RequestStore,
) -> None:
    key = RequestKey("acme", "alice", "r")
    first = store.quotas.acquire(key, T0, LIMITS, now=T0)
    second = store.quotas.acquire(key, T0, LIMITS, now=T0)
    assert (first.user, first.tenant, second.user, second.tenant) == (True, True, False, False)
    store.quotas.undo(second)
    assert (held(store, "alice"), held(store)) == (1, 1)
    store.quotas.undo(first)
    assert (held(store, "alice"), held(store)) == (0, 0)


def test_admin_requeue_counts_again_without_the_limit(store: RequestStore) -> None:
    ended = store.cancel(enqueue(store, "alice", "r0").key, now=T0 + 1)
    for i in range(1, 4):
        enqueue(store, "alice", f"r{i}", now=T0 + i)
    store.requeue(ended.key, now=T0 + 10)  # an operator's override: over the limit
    assert held(store, "alice") == 4
    with pytest.raises(QuotaExceeded):
        enqueue(store, "alice", "r9", now=T0 + 11)


# --- leaks heal by themselves ---------------------------------------------------------


OLD = T0 - LEAK_GRACE_MS  # a hold this old whose request is missing is a leak


@pytest.mark.parametrize(
    ("stored", "hold_at", "scope_user"),
    [
        ("final", T0 - 5, "alice"),  # ended, but its process died before the release
        (None, OLD, "alice"),  # its process died before it stored the request
        ("live", OLD, "alice"),  # a duplicate attempt that died after taking holds
        ("final", T0 - 5, "bob"),  # tenant scope: the leak is in another user's item
        (None, OLD, "bob"),
    ],
    ids=["user-final", "user-missing", "user-other-attempt", "tenant-final", "tenant-missing"],
)
def test_a_leaked_hold_is_given_back_when_the_limit_is_reached(
    store: RequestStore, stored: str | None, hold_at: int, scope_user: str
) -> None:
    leaked = RequestKey("acme", "alice", "leaked")
    if stored is not None:
        enqueue(store, "alice", "leaked", now=T0 - 5)
    if stored == "final":
        store.cancel(leaked, now=T0 + 1)  # gives its hold back...
    store.quotas.hold(leaked, hold_at)  # ...which the dead process had not done
    used = 2 if stored == "live" else 1
    if scope_user == "alice":  # fill the user's limit (3)
        fill = [("alice", f"a{i}") for i in range(3 - used)]
    else:  # fill the tenant's limit (5) with other users
        fill = [(f"u{i}", "r") for i in range(5 - used)]
    for i, (user, request_id) in enumerate(fill):
        enqueue(store, user, request_id, now=T0 + i)
    enqueue(store, scope_user, "fresh", now=T0 + 100)
    assert store.get(RequestKey("acme", scope_user, "fresh")).status is S.PENDING
    assert user_member("leaked", hold_at) not in store.quotas.held("acme", "alice")
    assert held(store, None if scope_user == "bob" else "alice") == (
        5 if scope_user == "bob" else 3
    )


def test_a_young_hold_without_its_request_is_not_taken_away(store: RequestStore) -> None:
    # Another process took it a moment ago and is still writing the request.
    store.quotas.acquire(RequestKey("acme", "alice", "in-flight"), T0, LIMITS, now=T0)
    enqueue(store, "alice", "a", now=T0 + 1)
    enqueue(store, "alice", "b", now=T0 + 2)
    with pytest.raises(QuotaExceeded):
        enqueue(store, "alice", "c", now=T0 + 3)
    assert user_member("in-flight", T0) in store.quotas.held("acme", "alice")


def test_a_heal_that_frees_nothing_is_not_repeated_at_once(
    dynamodb: base.StoreConfig,
) -> None:
    lookups: list[int] = []
    store = RequestStore(heal_cooldown_s=60)
    real = store.quotas._lookup
    store.quotas._lookup = lambda keys: lookups.append(len(keys)) or real(keys)  # type: ignore[method-assign]
    for i in range(3):
        enqueue(store, "alice", f"r{i}", now=T0 + i)
    for i in range(3):
        with pytest.raises(QuotaExceeded):
            enqueue(store, "alice", f"x{i}", now=T0 + 10 + i)
    assert lookups == [3]


# --- bad input and failures -----------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [QuotaLimits(0, 5), QuotaLimits(3, 0), QuotaLimits(-1, 5), QuotaLimits(True, 5)],  # type: ignore[arg-type]
)
def test_bad_limits_are_refused_before_any_write(store: RequestStore, limits: Any) -> None:
    with pytest.raises(ValidationError):
        enqueue(store, "alice", "r", limits=limits)
    assert held(store) == 0
    with pytest.raises(NotFound):
        store.get(RequestKey("acme", "alice", "r"))


def test_limits_above_what_an_item_can_hold_are_clamped(store: RequestStore) -> None:
    key = RequestKey("acme", "alice", "r")
    huge = QuotaLimits(per_user=10**9, per_tenant=10**9)
    store.quotas.acquire(key, T0, huge, now=T0)
    assert held(store, "alice") == 1
    assert MAX_USER_LIMIT * (14 + 128 * 4) < 400_000  # the item stays under 400 KB


def test_tenant_refusal_gives_back_the_user_hold(store: RequestStore) -> None:
    for i in range(5):
        enqueue(store, f"u{i}", "r", now=T0 + i)
    with pytest.raises(QuotaExceeded):
        enqueue(store, "alice", "r", now=T0 + 10)
    assert held(store, "alice") == 0


def test_a_failed_release_only_leaks_a_hold_that_heals(
    store: RequestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [enqueue(store, "alice", f"r{i}", now=T0 + i) for i in range(3)]

    def down(self: QuotaStore, key: RequestKey, created_at: int) -> None:
        raise StorageUnavailable("storage unavailable during quota_release")

    with monkeypatch.context() as patch:
        patch.setattr(QuotaStore, "release", down)
        ended = store.cancel(records[0].key, now=T0 + 5)  # the ending itself succeeds
    assert ended.status is S.CANCELLED
    assert held(store, "alice") == 3  # leaked
    enqueue(store, "alice", "after", now=T0 + 6)  # the refusal healed it
    assert held(store, "alice") == 3


@pytest.mark.parametrize("failure", [AlreadyExists, StoreError], ids=["duplicate", "rejected"])
def test_a_refused_write_gives_the_holds_back(
    store: RequestStore, monkeypatch: pytest.MonkeyPatch, failure: type[Exception]
) -> None:
    from pynamodb.models import Model

    from storage.requests.model import RequestModel

    def refuse(self: Model, *args: Any, **kwargs: Any) -> None:
        raise StoreError("storage rejected enqueue")

    if failure is AlreadyExists:
        enqueue(store, "bob", "r", limits=None)
        with pytest.raises(AlreadyExists):
            enqueue(store, "bob", "r")
    else:
        monkeypatch.setattr(RequestModel, "save", refuse)
        with pytest.raises(StoreError):
            enqueue(store, "bob", "r")
    assert (held(store, "bob"), held(store)) == (0, 0)


def test_storage_down_while_writing_keeps_the_holds(
    store: RequestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage.requests.model import RequestModel

    def down(*args: Any, **kwargs: Any) -> None:
        raise StorageUnavailable("storage unavailable during enqueue")

    monkeypatch.setattr(RequestModel, "save", down)
    with pytest.raises(StorageUnavailable):
        enqueue(store, "bob", "r")
    # The write may have landed: the hold stays until a heal proves it missing.
    assert held(store, "bob") == 1


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


@pytest.mark.parametrize(
    "call",
    [
        lambda q: q.acquire(RequestKey("acme", "alice", "r"), T0, LIMITS),
        lambda q: q.release(RequestKey("acme", "alice", "r"), T0),
        lambda q: q.held("acme"),
        lambda q: q.hold(RequestKey("acme", "alice", "r"), T0),
    ],
    ids=["acquire", "release", "held", "hold"],
)
def test_unreachable_storage(unreachable: None, call: Callable[[QuotaStore], Any]) -> None:
    with pytest.raises(StorageUnavailable) as info:
        call(RequestStore().quotas)
    assert "127.0.0.1" not in str(info.value)
