"""Edges of the request store a caller relies on: what a requeue resets and counts, the
default progress message, and the checks of lease renewal."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

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


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda r, w: r.update_progress(KEY, 5, worker_id=w), id="progress"),
        pytest.param(lambda r, w: r.complete(KEY, {}, worker_id=w), id="complete"),
        pytest.param(lambda r, w: r.fail(KEY, "X", "m", worker_id=w), id="fail"),
        pytest.param(lambda r, w: r.schedule_retry(KEY, 5, "X", "m", worker_id=w), id="retry"),
        pytest.param(lambda r, w: r.claim(KEY, w, LEASE), id="claim"),
    ],
)
def test_a_worker_id_past_256_chars_is_named(
    requests: RequestStore, call: Callable[[RequestStore, str], object]
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        call(requests, "w" * 257)
    assert str(excinfo.value) == "worker_id must be a non-empty string of at most 256 chars"


@pytest.mark.parametrize(
    ("cursor", "valid"),
    [
        pytest.param({"u": "u", "r": "r", "c": 0}, True, id="shortest"),
        pytest.param({"u": "u" * 256, "r": "r" * 128, "c": 5}, True, id="longest"),
        pytest.param({"u": "u" * 257, "r": "r", "c": 5}, False, id="user-too-long"),
        pytest.param({"u": "u", "r": "r" * 129, "c": 5}, False, id="id-too-long"),
        pytest.param({"u": "", "r": "r", "c": 5}, False, id="no-user"),
        pytest.param({"u": "u", "r": "r", "c": -1}, False, id="negative-time"),
    ],
)
def test_tenant_list_cursor_limits(
    requests: RequestStore, cursor: dict[str, object], valid: bool
) -> None:
    encoded = base.encode_cursor(cursor)
    if valid:
        assert requests.list_by_tenant("acme", cursor=encoded).items == []
        return
    with pytest.raises(ValidationError) as excinfo:
        requests.list_by_tenant("acme", cursor=encoded)
    assert str(excinfo.value) == "invalid cursor"
