"""Edges of the request store a caller relies on: what a requeue resets and counts, the
default progress message, and the checks of lease renewal."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from storage import base
from storage.errors import StorageUnavailable, ValidationError
from storage.requests.model import RequestKey, RequestStatus, shard_for
from storage.requests.quota import QuotaLimits, user_member
from storage.requests.store import RequestStore

S = RequestStatus
T0 = 1_700_000_000_000
LEASE = 30_000
KEY = RequestKey("acme", "alice", "r1")


@pytest.fixture
def requests(dynamodb: base.StoreConfig) -> Iterator[RequestStore]:
    yield RequestStore()


def _failed_after_progress(requests: RequestStore) -> None:
    requests.enqueue(
        tenant_id="acme",
        user_id="alice",
        request_id="r1",
        action="a",
        payload={},
        now=T0,
        limits=QuotaLimits(per_user=5, per_tenant=5),
    )
    assert requests.claim(KEY, "w1", LEASE, now=T0) is not None
    requests.update_progress(KEY, 50, "half way", worker_id="w1")
    requests.fail(KEY, "X", "boom", worker_id="w1", now=T0 + 5)


@pytest.mark.parametrize("shards", [1, 7, 256])
def test_requeue_resets_progress_uses_the_shard_count_and_counts_the_request_again(
    requests: RequestStore, shards: int
) -> None:
    _failed_after_progress(requests)
    assert requests.quotas.held("acme", "alice") == set()  # the failure gave the hold back
    record = requests.requeue(KEY, now=T0 + 10, shards=shards)
    assert (record.status, record.percentage) == (S.PENDING, 0)
    assert record.due_shard == shard_for(KEY.owner, KEY.request_id, shards)
    assert requests.quotas.held("acme", "alice") == {user_member("r1", T0)}


def test_requeue_rejects_more_than_256_shards(requests: RequestStore) -> None:
    with pytest.raises(ValidationError) as excinfo:
        requests.requeue(KEY, shards=257)
    assert str(excinfo.value) == "shards must be at most 256"


def test_a_requeue_whose_quota_count_fails_still_requeues_and_says_so(
    requests: RequestStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _failed_after_progress(requests)

    def unavailable(*_args: object) -> None:
        raise StorageUnavailable("storage unavailable during quota_acquire")

    monkeypatch.setattr(requests.quotas, "hold", unavailable)
    with caplog.at_level(logging.WARNING, logger="storage.requests.store"):
        assert requests.requeue(KEY, now=T0 + 10).status is S.PENDING
    assert "quota: could not count requeued request r1" in caplog.messages


def test_progress_without_a_message_stores_an_empty_one(requests: RequestStore) -> None:
    requests.enqueue(
        tenant_id="acme", user_id="alice", request_id="r1", action="a", payload={}, now=T0
    )
    assert requests.claim(KEY, "w1", LEASE, now=T0) is not None
    assert requests.update_progress(KEY, 10).message == ""


@pytest.mark.parametrize(
    ("worker_id", "lease_ms", "message"),
    [
        pytest.param("w" * 257, LEASE, "worker_id must be a non-empty string of at most 256 chars"),
        pytest.param("w1", 0, "lease_ms must be an integer >= 1"),
    ],
)
def test_renew_lease_names_the_bad_argument(
    requests: RequestStore, worker_id: str, lease_ms: int, message: str
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        requests.renew_lease(KEY, worker_id, lease_ms)
    assert str(excinfo.value) == message


def test_progress_from_a_bad_worker_id_names_it(requests: RequestStore) -> None:
    with pytest.raises(ValidationError) as excinfo:
        requests.update_progress(KEY, 5, worker_id="w" * 257)
    assert str(excinfo.value) == "worker_id must be a non-empty string of at most 256 chars"
