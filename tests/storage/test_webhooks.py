"""The webhook outbox against moto and the embedded DynamoDB (dynalite)."""

from __future__ import annotations

import threading

import pytest

from storage.errors import NotFound, ValidationError
from storage.webhooks import (
    MAX_ATTEMPTS_KEPT,
    RETRY_WINDOW_MS,
    SHARDS,
    Attempt,
    DeliveryStatus,
    WebhookStore,
    delivery_id_for,
)

T0 = 1_800_000_000_000


def add(store: WebhookStore, request_id: str, *, tenant: str = "acme", now: int = T0) -> str:
    delivery_id = delivery_id_for(tenant, "alice", request_id, now)
    store.add(
        delivery_id=delivery_id,
        tenant_id=tenant,
        user_id="alice",
        request_id=request_id,
        event_type="request.completed",
        body='{"type":"request.completed"}',
        now=now,
    )
    return delivery_id


def due_ids(store: WebhookStore, now: int) -> set[str]:
    return {d for shard in range(SHARDS) for d in store.due(shard, now=now)}


@pytest.fixture
def store(dynamodb: object) -> WebhookStore:
    return WebhookStore()


def test_the_same_event_is_stored_once(store: WebhookStore) -> None:
    first = add(store, "r1")
    assert not store.add(
        delivery_id=first,
        tenant_id="acme",
        user_id="alice",
        request_id="r1",
        event_type="request.failed",
        body="{}",
        now=T0 + 5,
    )
    stored = store.get(first)
    assert (stored.status, stored.event_type, stored.body) == (
        DeliveryStatus.PENDING,
        "request.completed",
        '{"type":"request.completed"}',
    )
    assert stored.deadline_at == T0 + RETRY_WINDOW_MS


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("acme", "alice", "r1", 1), ("acme", "alice", "r1", 1), True),
        (("acme", "alice", "r1", 1), ("acme", "alice", "r1", 2), False),  # re-run, ended again
        (("acme", "alice", "r1", 1), ("acme", "bob", "r1", 1), False),
        (("acme", "alice", "r1", 1), ("other", "alice", "r1", 1), False),
    ],
)
def test_delivery_ids_name_one_ending_of_one_request(a: tuple, b: tuple, same: bool) -> None:
    assert delivery_id_for(*a).startswith("msg_")
    assert (delivery_id_for(*a) == delivery_id_for(*b)) is same


@pytest.mark.integration
def test_only_one_of_many_racing_senders_claims_a_delivery(local_dynamodb: object) -> None:
    # dynalite, not moto: moto checks a condition and writes in two steps threads can
    # interleave (tests/unit/worker/conftest.py); DynamoDB and dynalite write atomically.
    store = WebhookStore()
    delivery_id = add(store, "r1")
    results: list[object] = []
    barrier = threading.Barrier(8)

    def claim(n: int) -> None:
        barrier.wait()
        results.append(store.claim(delivery_id, f"sender-{n}", 60_000, now=T0 + 10))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if r is not None]
    assert len(won) == 1
    assert store.get(delivery_id).claimed_by == won[0].claimed_by  # type: ignore[attr-defined]
    # Claimed: not due again until the lease ends.
    assert delivery_id not in due_ids(store, T0 + 10)
    assert delivery_id in due_ids(store, T0 + 60_010)
    assert store.claim(delivery_id, "late", 60_000, now=T0 + 60_010) is not None


@pytest.mark.parametrize(
    ("delivered", "next_at", "status", "due_at_later"),
    [
        (True, None, DeliveryStatus.DELIVERED, False),
        (False, T0 + 2000, DeliveryStatus.PENDING, True),
        (False, None, DeliveryStatus.FAILED, False),
    ],
)
def test_an_attempt_delivers_reschedules_or_gives_up(
    store: WebhookStore, delivered: bool, next_at: int | None, status: str, due_at_later: bool
) -> None:
    delivery_id = add(store, "r1")
    claimed = store.claim(delivery_id, "s1", 60_000, now=T0)
    assert claimed is not None
    code = 200 if delivered else 503
    after = store.record_attempt(
        claimed, "s1", Attempt(T0 + 1, code, ""), delivered=delivered, next_attempt_at=next_at
    )
    assert after is not None
    assert (after.status, after.attempt_count, after.claimed_by) == (status, 1, None)
    assert after.attempts == [Attempt(T0 + 1, code, "")]
    assert (delivery_id in due_ids(store, T0 + 10_000)) is due_at_later
    assert delivery_id not in due_ids(store, T0 + 1000)


def test_a_sender_that_lost_its_claim_records_nothing(store: WebhookStore) -> None:
    delivery_id = add(store, "r1")
    slow = store.claim(delivery_id, "slow", 1000, now=T0)
    fast = store.claim(delivery_id, "fast", 1000, now=T0 + 2000)  # slow's lease ran out
    assert slow is not None and fast is not None
    lost = store.record_attempt(
        slow, "slow", Attempt(T0 + 2500, 500), delivered=False, next_attempt_at=T0 + 9000
    )
    assert lost is None
    assert store.record_attempt(
        fast, "fast", Attempt(T0 + 2600, 200), delivered=True, next_attempt_at=None
    )
    assert store.get(delivery_id).status is DeliveryStatus.DELIVERED


def test_only_the_last_attempts_are_kept(store: WebhookStore) -> None:
    delivery_id = add(store, "r1")
    now = T0
    for n in range(MAX_ATTEMPTS_KEPT + 3):
        claimed = store.claim(delivery_id, "s", 100, now=now)
        assert claimed is not None
        store.record_attempt(
            claimed, "s", Attempt(now, 500, f"#{n}"), delivered=False, next_attempt_at=now + 1
        )
        now += 1
    stored = store.get(delivery_id)
    assert stored.attempt_count == MAX_ATTEMPTS_KEPT + 3
    assert len(stored.attempts) == MAX_ATTEMPTS_KEPT
    assert stored.attempts[-1].error == f"#{MAX_ATTEMPTS_KEPT + 2}"


def test_resend_makes_a_failed_delivery_due_again_under_the_same_id(
    store: WebhookStore,
) -> None:
    delivery_id = add(store, "r1")
    claimed = store.claim(delivery_id, "s", 100, now=T0)
    assert claimed is not None
    store.record_attempt(claimed, "s", Attempt(T0, 500), delivered=False, next_attempt_at=None)
    assert delivery_id not in due_ids(store, T0 + 10**9)
    later = T0 + 2 * RETRY_WINDOW_MS
    again = store.resend(delivery_id, now=later)
    assert (again.delivery_id, again.status) == (delivery_id, DeliveryStatus.PENDING)
    assert again.deadline_at == later + RETRY_WINDOW_MS
    assert again.attempts == [*claimed.attempts, Attempt(T0, 500)]
    assert delivery_id in due_ids(store, later)


def test_missing_deliveries_and_bad_ids_are_clear_errors(store: WebhookStore) -> None:
    with pytest.raises(NotFound):
        store.get("msg_missing")
    with pytest.raises(NotFound):
        store.resend("msg_missing")
    with pytest.raises(ValidationError):
        store.get("")
    with pytest.raises(ValidationError):
        add(store, "")
    assert store.claim("msg_missing", "s", 100) is None


def test_a_tenants_deliveries_are_listed_newest_first_page_by_page(store: WebhookStore) -> None:
    ids = [add(store, f"r{n}", now=T0 + n) for n in range(5)]
    add(store, "elsewhere", tenant="other")
    first = store.list_by_tenant("acme", limit=3)
    assert [d.delivery_id for d in first.items] == ids[::-1][:3]
    assert first.cursor is not None
    rest = store.list_by_tenant("acme", limit=3, cursor=first.cursor)
    assert [d.delivery_id for d in rest.items] == ids[::-1][3:]
