"""Contract of :mod:`storage.subscription`, against moto and the embedded server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.client import BaseClient

from storage import base
from storage import subscription as subscription_module
from storage.errors import StorageUnavailable, StoreError, ValidationError
from storage.subscription import (
    SUBSCRIPTION_TTL_MS,
    Subscription,
    SubscriptionModel,
    subscription_store,
)
from tests.storage.helpers import fail_calls_with, no_network_fixture, unreachable_fixture  # noqa: F401

store = subscription_store


def sub(request_key: str, connection_id: str, transport: str = "channels") -> Subscription:
    return store.subscribe(request_key, connection_id, transport, f"addr-{connection_id}")


def keys(subs: list[Subscription]) -> set[tuple[str, str]]:
    return {(s.request_key, s.connection_id) for s in subs}


# --------------------------------------------------------------------------- subscribe


@pytest.mark.parametrize(
    ("request_key", "connection_id", "transport", "address"),
    [
        ("acme#alice#r1", "c1", "channels", "specific.abc!def"),
        ("acme#alice#r1", "c1", "apigw", "https://abc.execute-api.eu-west-1.amazonaws.com/prod"),
        ("k" * 1024, "c" * 256, "channels", "a" * 2048),
    ],
    ids=["channels", "apigw", "longest"],
)
def test_subscribe_then_list(
    dynamodb: base.StoreConfig, request_key: str, connection_id: str, transport: str, address: str
) -> None:
    before = base.now_ms()
    made = store.subscribe(request_key, connection_id, transport, address)
    assert made == Subscription(request_key, connection_id, transport, address, made.created_at)
    assert before <= made.created_at <= base.now_ms()
    assert store.list_by_request(request_key) == [made]
    assert store.list_by_connection(connection_id) == [made]
    item = SubscriptionModel.get(request_key, connection_id)
    assert item.ttl is not None
    assert int(item.ttl.timestamp()) == (made.created_at + SUBSCRIPTION_TTL_MS) // 1000


def test_subscribe_again_is_an_upsert(dynamodb: base.StoreConfig) -> None:
    first = store.subscribe("r1", "c1", "channels", "old-address")
    time.sleep(0.002)
    second = store.subscribe("r1", "c1", "apigw", "new-address")
    assert second.created_at >= first.created_at
    assert store.list_by_request("r1") == [second]
    assert store.list_by_connection("c1") == [second]


@pytest.mark.parametrize(
    ("pairs", "request_key", "expected"),
    [
        ([], "r1", set()),
        ([("r1", "c1"), ("r1", "c2"), ("r2", "c1")], "r1", {("r1", "c1"), ("r1", "c2")}),
        ([("r1", "c1"), ("r2", "c1")], "r3", set()),
    ],
)
def test_list_by_request(
    dynamodb: base.StoreConfig,
    pairs: list[tuple[str, str]],
    request_key: str,
    expected: set[tuple[str, str]],
) -> None:
    for request, connection in pairs:
        sub(request, connection)
    listed = store.list_by_request(request_key)
    assert keys(listed) == expected
    assert all(s.address == f"addr-{s.connection_id}" for s in listed)


@pytest.mark.parametrize(
    ("pairs", "connection_id", "expected"),
    [
        ([], "c1", set()),
        ([("r1", "c1"), ("r2", "c1"), ("r1", "c2")], "c1", {("r1", "c1"), ("r2", "c1")}),
        ([("r1", "c1")], "c9", set()),
    ],
)
def test_list_by_connection(
    dynamodb: base.StoreConfig,
    pairs: list[tuple[str, str]],
    connection_id: str,
    expected: set[tuple[str, str]],
) -> None:
    for request, connection in pairs:
        sub(request, connection)
    listed = store.list_by_connection(connection_id)
    assert keys(listed) == expected
    assert all(s.transport == "channels" and s.created_at > 0 for s in listed)


@pytest.mark.parametrize("page_size", [1, 2, 100])
def test_lists_read_every_page(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch, page_size: int
) -> None:
    monkeypatch.setattr(subscription_module, "_PAGE", page_size)
    for n in range(5):
        sub("r1", f"c{n}")
        sub(f"r-{n}", "c0")
    assert keys(store.list_by_request("r1")) == {("r1", f"c{n}") for n in range(5)}
    assert keys(store.list_by_connection("c0")) == {("r1", "c0")} | {
        (f"r-{n}", "c0") for n in range(5)
    }


# --------------------------------------------------------------------------- unsubscribe


@pytest.mark.parametrize(
    ("existing", "target", "first"),
    [
        ([("r1", "c1")], ("r1", "c1"), True),
        ([("r1", "c1")], ("r1", "c2"), False),
        ([("r1", "c1")], ("r2", "c1"), False),
        ([], ("r1", "c1"), False),
    ],
    ids=["existing", "other-connection", "other-request", "empty"],
)
def test_unsubscribe_is_idempotent(
    dynamodb: base.StoreConfig,
    existing: list[tuple[str, str]],
    target: tuple[str, str],
    first: bool,
) -> None:
    for request, connection in existing:
        sub(request, connection)
    assert store.unsubscribe(*target) is first
    assert store.unsubscribe(*target) is False
    remaining = set(existing) - {target}
    assert keys(store.list_by_request("r1")) | keys(store.list_by_request("r2")) == remaining


# --------------------------------------------------------------------------- bulk deletes


@pytest.mark.parametrize("count", [0, 1, 25, 26, 60])
def test_delete_by_connection(dynamodb: base.StoreConfig, count: int) -> None:
    for n in range(count):
        sub(f"r-{n}", "gone")
    sub("r-0", "stays")
    sub("r-other", "stays")
    assert store.delete_by_connection("gone") == count
    assert store.list_by_connection("gone") == []
    assert keys(store.list_by_connection("stays")) == {("r-0", "stays"), ("r-other", "stays")}
    assert store.delete_by_connection("gone") == 0


def test_delete_by_connection_reads_every_page(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscription_module, "_PAGE", 3)
    for n in range(10):
        sub(f"r-{n}", "gone")
    assert store.delete_by_connection("gone") == 10
    assert store.list_by_connection("gone") == []


def _generator(values: list[str]) -> Iterator[str]:
    yield from values


@pytest.mark.parametrize(
    ("subscribed", "request_keys", "expected_count", "remaining"),
    [
        pytest.param(["r1", "r2", "r3"], ["r1", "r3"], 2, {"r2"}, id="some"),
        pytest.param(["r1"], ["r1", "r1", "r1"], 1, set(), id="duplicates-sent-once"),
        pytest.param(["r1"], ["r9"], 1, {"r1"}, id="unknown-key-is-harmless"),
        pytest.param(["r1"], [], 0, {"r1"}, id="nothing"),
        pytest.param(["r1", "r2"], ("r1", "r2"), 2, set(), id="tuple"),
        pytest.param(["r1", "r2"], lambda: _generator(["r2"]), 1, {"r1"}, id="generator"),
        pytest.param(
            [f"r{n}" for n in range(40)],
            [f"r{n}" for n in range(30)],
            30,
            {f"r{n}" for n in range(30, 40)},
            id="more-than-one-batch",
        ),
    ],
)
def test_delete_many(
    dynamodb: base.StoreConfig,
    subscribed: list[str],
    request_keys: Any,
    expected_count: int,
    remaining: set[str],
) -> None:
    for request_key in subscribed:
        sub(request_key, "c1")
    sub("r1", "c2")  # another connection on a deleted request is untouched
    if callable(request_keys):  # a fresh generator for each backend
        request_keys = request_keys()
    assert store.delete_many("c1", request_keys) == expected_count
    assert {s.request_key for s in store.list_by_connection("c1")} == remaining
    assert keys(store.list_by_connection("c2")) == {("r1", "c2")}


def test_delete_many_with_nothing_makes_no_call(no_network: list[str]) -> None:
    assert store.delete_many("c1", []) == 0
    assert store.delete_many("c1", iter(())) == 0
    assert no_network == []


# --------------------------------------------------------------------------- validation

VALIDATION_CASES: list[Any] = [
    pytest.param(lambda: store.subscribe("", "c1", "channels", "a"), id="subscribe-empty-key"),
    pytest.param(lambda: store.subscribe("k" * 1025, "c1", "channels", "a"), id="sub-long-key"),
    pytest.param(lambda: store.subscribe("r1", "", "channels", "a"), id="subscribe-empty-conn"),
    pytest.param(lambda: store.subscribe("r1", None, "channels", "a"), id="subscribe-none-conn"),
    pytest.param(lambda: store.subscribe("r1", "c1", "sse", "a"), id="subscribe-bad-transport"),
    pytest.param(lambda: store.subscribe("r1", "c1", "channels", ""), id="subscribe-no-address"),
    pytest.param(
        lambda: store.subscribe("r1", "c1", "channels", "a" * 2049), id="subscribe-long-address"
    ),
    pytest.param(lambda: store.unsubscribe("", "c1"), id="unsubscribe-empty-key"),
    pytest.param(lambda: store.unsubscribe("r1", ""), id="unsubscribe-empty-conn"),
    pytest.param(lambda: store.list_by_request(""), id="list-request-empty"),
    pytest.param(lambda: store.list_by_request(5), id="list-request-int"),
    pytest.param(lambda: store.list_by_connection(""), id="list-connection-empty"),
    pytest.param(lambda: store.delete_by_connection(""), id="delete-by-connection-empty"),
    pytest.param(lambda: store.delete_many("", ["r1"]), id="delete-many-empty-conn"),
    pytest.param(lambda: store.delete_many("c1", "r1"), id="delete-many-string"),
    pytest.param(lambda: store.delete_many("c1", ["r1", ""]), id="delete-many-empty-key"),
    pytest.param(lambda: store.delete_many("c1", ["r1", None]), id="delete-many-none-key"),
]


@pytest.mark.parametrize("call", VALIDATION_CASES)
def test_validation_errors_come_before_any_network_call(
    no_network: list[str], call: Callable[[], Any]
) -> None:
    with pytest.raises(ValidationError):
        call()
    assert no_network == []


# --------------------------------------------------------------------------- storage failures

EVERY_OPERATION: list[Any] = [
    pytest.param(lambda: store.subscribe("r1", "c1", "channels", "a"), id="subscribe"),
    pytest.param(lambda: store.unsubscribe("r1", "c1"), id="unsubscribe"),
    pytest.param(lambda: store.list_by_request("r1"), id="list_by_request"),
    pytest.param(lambda: store.list_by_connection("c1"), id="list_by_connection"),
    pytest.param(lambda: store.delete_by_connection("c1"), id="delete_by_connection"),
    pytest.param(lambda: store.delete_many("c1", ["r1", "r2"]), id="delete_many"),
]


@pytest.mark.parametrize("call", EVERY_OPERATION)
def test_unreachable_storage_is_storage_unavailable_quickly(
    unreachable: base.StoreConfig, call: Callable[[], Any]
) -> None:
    start = time.monotonic()
    with pytest.raises(StorageUnavailable) as excinfo:
        call()
    assert time.monotonic() - start < 5
    assert "127.0.0.1" not in str(excinfo.value)


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
        call()
    assert calls


def test_throttled_batch_delete_after_query_is_storage_unavailable(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub("r1", "c1")
    original = BaseClient._make_api_call

    def throttle_batch(self: BaseClient, operation_name: str, params: dict[str, Any]) -> Any:
        if operation_name == "BatchWriteItem":
            from botocore.exceptions import ClientError

            error = {"Error": {"Code": "ThrottlingException", "Message": "x"}}
            raise ClientError(error, operation_name)  # type: ignore[arg-type]
        return original(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", throttle_batch)
    with pytest.raises(StorageUnavailable):
        store.delete_by_connection("c1")
    monkeypatch.undo()
    assert keys(store.list_by_request("r1")) == {("r1", "c1")}


def test_other_storage_errors_are_not_mistaken_for_a_missing_item(
    unreachable: base.StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_calls_with(monkeypatch, "ValidationException")
    with pytest.raises(StoreError) as excinfo:
        store.unsubscribe("r1", "c1")
    assert not isinstance(excinfo.value, StorageUnavailable)
    assert "ValidationException" not in str(excinfo.value)


# --------------------------------------------------------------------------- concurrency


def test_concurrent_subscribers_are_all_kept(dynamodb: base.StoreConfig) -> None:
    threads_count = 20
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()
            sub("shared", f"c{n:02d}")
            sub(f"own-{n}", f"c{n:02d}")
            sub("shared", f"c{n:02d}")  # again: still one item
            if n % 2:
                assert store.unsubscribe(f"own-{n}", f"c{n:02d}") is True
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert keys(store.list_by_request("shared")) == {
        ("shared", f"c{n:02d}") for n in range(threads_count)
    }
    for n in range(threads_count):
        expected = {"shared"} if n % 2 else {"shared", f"own-{n}"}
        assert {s.request_key for s in store.list_by_connection(f"c{n:02d}")} == expected
