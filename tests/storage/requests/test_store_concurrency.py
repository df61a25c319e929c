"""Races with REAL threads: the conditional writes decide, against moto AND dynalite."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from moto.dynamodb.models import DynamoDBBackend

from storage import base
from storage.errors import AlreadyExists, InvalidTransition
from storage.requests import RequestKey, RequestRecord, RequestStatus, RequestStore
from storage.requests.quota import QuotaExceeded, QuotaLimits

THREADS = 20
T0 = 1_700_000_000_000
KEY = RequestKey("acme", "alice", "race")


@pytest.fixture(autouse=True)
def _atomic_moto_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks a ConditionExpression and then writes without any lock, so under
    real threads two conditional writes to one item can both pass (measured: a request
    claimed twice). DynamoDB, and dynalite, make each conditional write atomic per
    item; restore that guarantee in moto so these tests check OUR conditions. The
    dynalite runs of the same tests need no such help."""
    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item"):
        original = getattr(DynamoDBBackend, name)

        def atomic(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, atomic)


@pytest.fixture
def store(dynamodb: base.StoreConfig) -> RequestStore:
    return RequestStore()


def enqueue(store: RequestStore, key: RequestKey = KEY, now: int = T0) -> None:
    store.enqueue(
        tenant_id=key.tenant_id,
        user_id=key.user_id,
        request_id=key.request_id,
        action="race",
        payload={},
        now=now,
    )


def run_together(store: RequestStore, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in THREADS threads released at once by a Barrier.

    Each thread makes one read first so that its own botocore client exists before the
    barrier: the racing calls then really overlap. Returns results (or exceptions).
    """
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def target(i: int) -> None:
        store.batch_get([KEY])  # warm this thread's connection
        barrier.wait(timeout=30)
        try:
            results[i] = work(i)
        except Exception as exc:  # collected and asserted on by the test
            results[i] = exc

    threads = [threading.Thread(target=target, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_exactly_one_of_many_claimers_wins(store: RequestStore) -> None:
    enqueue(store)
    results = run_together(store, lambda i: store.claim(KEY, f"w{i}", 30_000, now=T0 + 1))
    winners = [r for r in results if r is not None]
    assert not [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1
    stored = store.get(KEY)
    assert stored.lease_owner == winners[0].lease_owner
    assert (stored.status, stored.attempts) == (RequestStatus.PROCESSING, 1)


def test_exactly_one_reclaims_an_expired_lease(store: RequestStore) -> None:
    enqueue(store)
    assert store.claim(KEY, "dead", 1_000, now=T0) is not None
    results = run_together(store, lambda i: store.claim(KEY, f"w{i}", 30_000, now=T0 + 5_000))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert store.get(KEY).attempts == 2


def test_concurrent_progress_keeps_the_maximum(store: RequestStore) -> None:
    enqueue(store)
    assert store.claim(KEY, "w", 30_000, now=T0) is not None
    values = random.Random(7).sample(range(1, 101), THREADS)
    results = run_together(store, lambda i: store.update_progress(KEY, values[i], f"v{values[i]}"))
    assert not [r for r in results if isinstance(r, Exception)]
    for value, record in zip(values, results, strict=True):
        assert record.percentage >= value  # never below what that caller wrote
    stored = store.get(KEY)
    assert stored.percentage == max(values)
    assert stored.message == f"v{max(values)}"


def test_complete_and_cancel_race_has_one_ending(store: RequestStore) -> None:
    enqueue(store)
    assert store.claim(KEY, "w", 30_000, now=T0) is not None

    def end(i: int) -> Any:
        if i % 2:
            return store.cancel(KEY)
        return store.complete(KEY, {"by": i}, worker_id="w")

    results = run_together(store, end)
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, InvalidTransition)]
    assert len(ok) == 1 and len(refused) == THREADS - 1
    final = store.get(KEY)
    assert final == ok[0]
    assert {r.current_status for r in refused} == {final.status.value}


def test_duplicate_enqueue_race_queues_once(store: RequestStore) -> None:
    def put(i: int) -> Any:
        enqueue(store)
        return i

    results = run_together(store, put)
    duplicates = [r for r in results if isinstance(r, AlreadyExists)]
    assert len(duplicates) == THREADS - 1
    assert {d.existing_status for d in duplicates} == {"PENDING"}


def test_workers_polling_the_queue_claim_each_request_once(store: RequestStore) -> None:
    keys = [RequestKey("acme", f"u{i % 3}", f"job{i}") for i in range(30)]
    for i, key in enumerate(keys):
        enqueue(store, key, now=T0 + i)

    def work(i: int) -> list[RequestKey]:
        mine = []
        for record in store.list_due(now=T0 + 1_000, limit=100):
            if store.claim(record.key, f"w{i}", 60_000, now=T0 + 1_000) is not None:
                mine.append(record.key)
        return mine

    results = run_together(store, work)
    claimed = Counter(key for result in results for key in result)
    assert set(claimed) == set(keys)
    assert set(claimed.values()) == {1}
    assert store.list_pending(now=T0 + 1_000) == []


@pytest.mark.parametrize(
    ("users", "scope", "limit"),
    [(["alice"], "user", 20), ([f"u{i}" for i in range(10)], "tenant", 20)],
    ids=["one-user", "ten-users"],
)
def test_a_burst_never_gets_past_a_quota(
    store: RequestStore, users: list[str], scope: str, limit: int
) -> None:
    """50 enqueues at once (one user, or ten users of one tenant): exactly ``limit``
    are stored, every other one is refused with the scope that was full."""
    attempts = 50
    limits = QuotaLimits(per_user=20, per_tenant=1000 if scope == "user" else limit)
    barrier = threading.Barrier(attempts)
    results: list[Any] = [None] * attempts

    def target(i: int) -> None:
        store.quotas.held("acme")  # warm this thread's connection
        barrier.wait(timeout=30)
        try:
            results[i] = store.enqueue(
                tenant_id="acme",
                user_id=users[i % len(users)],
                request_id=f"burst{i}",
                action="race",
                payload={},
                now=T0 + i,
                limits=limits,
            )
        except Exception as exc:  # collected and asserted on below
            results[i] = exc

    threads = [threading.Thread(target=target, args=(i,)) for i in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    accepted = [r for r in results if isinstance(r, RequestRecord)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(accepted) == limit and len(refused) == attempts - limit, results
    assert {(r.scope, r.limit) for r in refused} == {(scope, limit)}
    stored = store.batch_get(
        [RequestKey("acme", users[i % len(users)], f"burst{i}") for i in range(attempts)]
    )
    assert {r.request_id for r in stored} == {r.request_id for r in accepted}
    assert len(store.quotas.held("acme")) == limit
