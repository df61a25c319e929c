"""What a caller reads in the errors of the request store.

Validation errors name the argument and its limit; storage failures name the operation
(and carry no library text); refused transitions say what was attempted and why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import botocore.client
import pytest

from storage import base
from storage.errors import InvalidTransition, StorageUnavailable, StoreError, ValidationError
from storage.requests.model import RequestKey, RequestStatus
from storage.requests.store import RequestStore
from tests.storage.helpers import fail_calls_with

S = RequestStatus
T0 = 1_700_000_000_000
LEASE = 30_000
KEY = RequestKey("acme", "alice", "r1")
store = RequestStore()


def _enqueue(**overrides: Any) -> Callable[[], Any]:
    args: dict[str, Any] = {
        "tenant_id": "acme",
        "user_id": "alice",
        "request_id": "r1",
        "action": "report.run",
        "payload": {"rows": 3},
        "now": T0,
    }
    args.update(overrides)
    return lambda: store.enqueue(**args)


def text_limit(name: str, limit: int) -> str:
    return f"{name} must be a non-empty string of at most {limit} chars"


VALIDATION_MESSAGES: list[Any] = [
    pytest.param(_enqueue(tenant_id="t" * 65), text_limit("tenant_id", 64), id="tenant-long"),
    pytest.param(_enqueue(tenant_id="a#b"), "tenant_id must not contain '#'", id="tenant-hash"),
    pytest.param(_enqueue(user_id="u" * 257), text_limit("user_id", 256), id="user-long"),
    pytest.param(_enqueue(request_id="r" * 129), text_limit("request_id", 128), id="id-long"),
    pytest.param(
        _enqueue(action="a b"), "action must be 1-64 characters of A-Z a-z 0-9 . _ -", id="action"
    ),
    pytest.param(_enqueue(payload=[1]), "payload must be an object", id="payload-list"),
    pytest.param(
        _enqueue(payload={"x": {1}}), "payload must be JSON-serializable", id="payload-set"
    ),
    pytest.param(
        _enqueue(payload={"x": "y" * 128 * 1024}),
        "payload is larger than 131072 bytes once encoded",
        id="payload-big",
    ),
    pytest.param(_enqueue(metadata=[1]), "metadata must be an object", id="metadata-list"),
    pytest.param(
        _enqueue(metadata={"x": "y" * 8 * 1024}),
        "metadata is larger than 8192 bytes once encoded",
        id="metadata-big",
    ),
    pytest.param(_enqueue(max_attempts=0), "max_attempts must be an integer >= 1", id="att-0"),
    pytest.param(_enqueue(max_attempts=101), "max_attempts must be at most 100", id="att-101"),
    pytest.param(
        _enqueue(timeout_s=7 * 24 * 3600 + 1),
        "timeout_s must be a number in (0, 604800]",
        id="timeout-long",
    ),
    pytest.param(
        _enqueue(connection_id="c" * 257),
        "connection_id must be a string of at most 256 chars",
        id="connection-long",
    ),
    pytest.param(
        _enqueue(origin_transport="t" * 65),
        "origin_transport must be a string of at most 64 chars",
        id="transport-long",
    ),
    pytest.param(
        _enqueue(origin_address="a" * 2049),
        "origin_address must be a string of at most 2048 chars",
        id="address-long",
    ),
    pytest.param(_enqueue(shards=257), "shards must be at most 256", id="shards-257"),
    pytest.param(_enqueue(now=-1), "now must be an integer >= 0", id="now-negative"),
    pytest.param(lambda: store.get(("acme", "alice", "r1")), "key must be a RequestKey", id="key"),
    pytest.param(
        lambda: store.claim(KEY, "w" * 257, LEASE), text_limit("worker_id", 256), id="worker"
    ),
    pytest.param(lambda: store.claim(KEY, "w", 0), "lease_ms must be an integer >= 1", id="lease"),
    pytest.param(
        lambda: store.update_progress(KEY, "50"), "percentage must be a number", id="percentage"
    ),
    pytest.param(
        lambda: store.update_progress(KEY, 5, message="m" * 1001),
        "message must be a string of at most 1000 chars",
        id="progress-message",
    ),
    pytest.param(
        lambda: store.update_progress(KEY, 5, details="d" * 16 * 1024),
        "details is larger than 16384 bytes once encoded",
        id="details-big",
    ),
    pytest.param(
        lambda: store.complete(KEY, "r" * 192 * 1024),
        "result is larger than 196608 bytes once encoded",
        id="result-big",
    ),
    pytest.param(lambda: store.fail(KEY, "c" * 65, "m"), text_limit("code", 64), id="code-long"),
    pytest.param(lambda: store.fail(KEY, "X", None), "message must be a string", id="fail-message"),
    pytest.param(
        lambda: store.schedule_retry(KEY, -1, "X", "m"),
        "retry_at_ms must be an integer >= 0",
        id="retry-at",
    ),
    pytest.param(
        lambda: store.list_by_user("acme", "alice", limit=101),
        "limit must be at most 100",
        id="list-limit",
    ),
    pytest.param(
        lambda: store.list_by_user("acme", "alice", status="done"), "unknown status", id="status"
    ),
    pytest.param(
        lambda: store.list_by_tenant("acme", status="done"), "unknown status", id="tenant-status"
    ),
    pytest.param(
        lambda: store.list_by_user("acme", "alice", cursor="%%%"), "invalid cursor", id="cursor"
    ),
    pytest.param(lambda: store.list_due(limit=1001), "limit must be at most 1000", id="due-limit"),
    pytest.param(
        lambda: store.list_due(exclude_tenants=["a#b"]),
        "tenant_id must not contain '#'",
        id="due-exclude",
    ),
    pytest.param(lambda: store.requeue(KEY, shards=0), "shards must be an integer >= 1", id="rq"),
]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("network call made before validation")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refuse)


@pytest.mark.parametrize(("call", "message"), VALIDATION_MESSAGES)
def test_validation_error_names_the_argument_and_its_limit(
    no_network: None, call: Callable[[], Any], message: str
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        call()
    assert str(excinfo.value) == message


OPERATIONS: list[Any] = [
    pytest.param(_enqueue(), "enqueue", id="enqueue"),
    pytest.param(lambda: store.get(KEY), "get", id="get"),
    pytest.param(lambda: store.batch_get([KEY]), "batch_get", id="batch_get"),
    pytest.param(lambda: store.claim(KEY, "w", LEASE), "claim", id="claim"),
    pytest.param(lambda: store.renew_lease(KEY, "w", LEASE), "renew the lease of", id="renew"),
    pytest.param(lambda: store.update_progress(KEY, 5), "update_progress", id="progress"),
    pytest.param(lambda: store.complete(KEY, {}), "complete", id="complete"),
    pytest.param(lambda: store.fail(KEY, "X", "m"), "fail", id="fail"),
    pytest.param(lambda: store.schedule_retry(KEY, 5, "X", "m"), "retry", id="retry"),
    pytest.param(lambda: store.cancel(KEY), "cancel", id="cancel"),
    pytest.param(lambda: store.requeue(KEY), "requeue", id="requeue"),
    pytest.param(lambda: store.list_by_user("acme", "alice"), "list_by_user", id="list_by_user"),
    pytest.param(lambda: store.list_by_tenant("acme"), "list_by_tenant", id="list_by_tenant"),
    pytest.param(lambda: store.list_due(), "list_due", id="list_due"),
]


@pytest.mark.parametrize(
    ("code", "error", "template"),
    [
        pytest.param("ThrottlingException", StorageUnavailable, "storage unavailable during {}"),
        pytest.param("ValidationException", StoreError, "storage rejected {}"),
    ],
)
@pytest.mark.parametrize(("call", "operation"), OPERATIONS)
def test_a_storage_failure_names_the_operation_and_nothing_else(
    moto_dynamodb: base.StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
    code: str,
    error: type[StoreError],
    template: str,
    call: Callable[[], Any],
    operation: str,
) -> None:
    fail_calls_with(monkeypatch, code)
    with pytest.raises(StoreError) as excinfo:
        call()
    assert type(excinfo.value) is error
    assert str(excinfo.value) == template.format(operation)


@pytest.fixture
def requests(dynamodb: base.StoreConfig) -> Iterator[RequestStore]:
    yield RequestStore()


def _in(requests: RequestStore, status: RequestStatus) -> None:
    """KEY in ``status``, leased by w1 when PROCESSING."""
    requests.enqueue(
        tenant_id="acme", user_id="alice", request_id="r1", action="a", payload={}, now=T0
    )
    if status is S.CANCELLED:
        requests.cancel(KEY, now=T0 + 1)
        return
    if status is not S.PENDING:
        assert requests.claim(KEY, "w1", LEASE, now=T0) is not None
    if status is S.COMPLETED:
        requests.complete(KEY, {}, worker_id="w1", now=T0 + 2)


@pytest.mark.parametrize(
    ("status", "attempt", "message"),
    [
        pytest.param(
            S.PENDING,
            lambda r: r.complete(KEY, {}),
            "cannot complete a request that is PENDING",
            id="complete-pending",
        ),
        pytest.param(
            S.COMPLETED,
            lambda r: r.cancel(KEY),
            "cannot cancel a request that is COMPLETED",
            id="cancel-completed",
        ),
        pytest.param(
            S.CANCELLED,
            lambda r: r.fail(KEY, "X", "m"),
            "cannot fail a request that is CANCELLED",
            id="fail-cancelled",
        ),
        pytest.param(
            S.PENDING,
            lambda r: r.schedule_retry(KEY, T0, "X", "m"),
            "cannot retry a request that is PENDING",
            id="retry-pending",
        ),
        pytest.param(
            S.COMPLETED,
            lambda r: r.requeue(KEY),
            "cannot requeue a request that is COMPLETED",
            id="requeue-completed",
        ),
        pytest.param(
            S.PROCESSING,
            lambda r: r.renew_lease(KEY, "w2", LEASE, now=T0 + 1),
            "cannot renew the lease of the request: its lease belongs to another worker",
            id="renew-other-worker",
        ),
        pytest.param(
            S.PROCESSING,
            lambda r: r.update_progress(KEY, 5, worker_id="w2"),
            "cannot report progress on the request: its lease belongs to another worker",
            id="progress-other-worker",
        ),
        pytest.param(
            S.PENDING,
            lambda r: r.update_progress(KEY, 5),
            "cannot report progress on a request that is PENDING",
            id="progress-pending",
        ),
    ],
)
def test_refused_transition_says_what_and_why(
    requests: RequestStore,
    status: RequestStatus,
    attempt: Callable[[RequestStore], Any],
    message: str,
) -> None:
    _in(requests, status)
    with pytest.raises(InvalidTransition) as excinfo:
        attempt(requests)
    assert str(excinfo.value) == message
    assert excinfo.value.current_status == status.value


def test_the_shortest_lease_is_one_millisecond(requests: RequestStore) -> None:
    _in(requests, S.PROCESSING)
    claimed = requests.renew_lease(KEY, "w1", 1, now=T0 + 1)
    assert claimed.lease_expires_at == claimed.due_at == T0 + 2
