"""``ConnectionStore.save_many`` / ``delete_many`` (storage/connection.py): the batched
registration of a reconnect storm stores exactly what ``save`` stores, 25 per call."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from storage import base
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound, StorageUnavailable, ValidationError
from tests.storage.helpers import fail_calls_with, no_network_fixture, record_calls  # noqa: F401


def info(n: int, **overrides: Any) -> ConnectionInfo:
    fields: dict[str, Any] = {
        "connection_id": f"c{n}",
        "tenant_id": "acme",
        "user_id": f"u{n % 3}",
        "transport": "channels",
        "address": f"specific.{n}",
        "permissions": ("reports.run",),
        "user_agent": "x" * 600,
        "expires_at": 1_900_000_000_000,
    }
    fields.update(overrides)
    return ConnectionInfo(**fields)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return record_calls(monkeypatch)


@pytest.mark.parametrize(("count", "batches"), [(1, 1), (25, 1), (26, 2)])
def test_save_many_stores_what_save_stores(
    dynamodb: base.StoreConfig, calls: list[str], count: int, batches: int
) -> None:
    infos = [info(n) for n in range(count)]
    returned = connection_store.save_many(infos)
    assert calls == ["BatchWriteItem"] * batches
    assert [connection_store.get(i.connection_id) for i in infos] == returned
    single = connection_store.save(replace(infos[0], connection_id="single"))
    first = returned[0]
    assert replace(single, connection_id=first.connection_id, connected_at=0, last_seen=0) == (
        replace(first, connected_at=0, last_seen=0)
    )
    assert len(first.user_agent) == 512
    assert connection_store.count_by_user("acme", "u0") == len(range(0, count, 3)) + 1


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"transport": "smoke"}, id="transport"),
        pytest.param({"tenant_id": "a#b"}, id="tenant"),
        pytest.param({"connection_id": ""}, id="connection-id"),
    ],
)
def test_save_many_checks_every_record_before_any_call(
    no_network: list[str], bad: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        connection_store.save_many([info(1), info(2, **bad)])
    with pytest.raises(ValidationError):
        connection_store.validate(info(3, **bad))
    assert no_network == []


@pytest.mark.parametrize("count", [1, 30])
def test_delete_many_removes_them_and_ignores_unknown_ones(
    dynamodb: base.StoreConfig, count: int
) -> None:
    connection_store.save_many([info(n) for n in range(count)])
    sent = connection_store.delete_many([f"c{n}" for n in range(count)] + ["never-there"])
    assert sent == count + 1
    assert connection_store.count_by_tenant("acme") == 0
    with pytest.raises(NotFound):
        connection_store.get("c0")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: connection_store.save_many([info(1)]), id="save_many"),
        pytest.param(lambda: connection_store.delete_many(["c1"]), id="delete_many"),
    ],
)
def test_throttled_batches_are_storage_unavailable(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch, call: Any
) -> None:
    attempted = fail_calls_with(monkeypatch, "ProvisionedThroughputExceededException")
    with pytest.raises(StorageUnavailable) as excinfo:
        call()
    assert attempted == ["BatchWriteItem"]
    assert "Rate exceeded" not in str(excinfo.value)  # no library text
