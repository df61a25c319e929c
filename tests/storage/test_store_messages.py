"""What a caller reads in the errors of the connection, subscription and heartbeat stores.

The error text is part of the contract: it names the argument and its limit (so a caller
can fix the call) and, for storage failures, the operation, never library text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from storage import base, heartbeat
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound, StorageUnavailable, ValidationError
from storage.subscription import subscription_store
from tests.storage.helpers import drain, fail_calls_with, no_network_fixture, unreachable_fixture  # noqa: F401

conn = connection_store
subs = subscription_store


def info(**overrides: Any) -> ConnectionInfo:
    fields: dict[str, Any] = {
        "connection_id": "c1",
        "tenant_id": "acme",
        "user_id": "alice",
        "transport": "channels",
        "address": "specific.c1!abc",
    }
    fields.update(overrides)
    return ConnectionInfo(**fields)


def text_limit(name: str, limit: int) -> str:
    return f"{name} must be a non-empty string of at most {limit} chars"


EPOCH_MS = "must be an integer >= 0"
PERMISSIONS = "permissions must be a sequence of non-empty strings"
STALE_AGE = "older_than_ms must be an integer >= 1"
TRANSPORT = "transport must be one of ['apigw', 'channels']"

VALIDATION_MESSAGES: list[Any] = [
    # connection store
    pytest.param(lambda: conn.save("c1"), "info must be a ConnectionInfo", id="save-not-info"),
    pytest.param(
        lambda: conn.save(info(connection_id="c" * 257)),
        text_limit("connection_id", 256),
        id="save-long-id",
    ),
    pytest.param(
        lambda: conn.save(info(tenant_id="")), text_limit("tenant_id", 64), id="save-no-tenant"
    ),
    pytest.param(
        lambda: conn.save(info(tenant_id="a#b")),
        "tenant_id must not contain '#'",
        id="save-tenant-hash",
    ),
    pytest.param(
        lambda: conn.save(info(user_id="u" * 257)), text_limit("user_id", 256), id="save-long-user"
    ),
    pytest.param(lambda: conn.save(info(transport="sse")), TRANSPORT, id="save-transport"),
    pytest.param(
        lambda: conn.save(info(address="a" * 2049)),
        text_limit("address", 2048),
        id="save-long-address",
    ),
    pytest.param(lambda: conn.save(info(permissions=("",))), PERMISSIONS, id="save-empty-perm"),
    pytest.param(lambda: conn.save(info(permissions="ab")), PERMISSIONS, id="save-perm-string"),
    pytest.param(
        lambda: conn.save(info(connected_at=-1)), f"connected_at {EPOCH_MS}", id="save-connected"
    ),
    pytest.param(
        lambda: conn.save(info(last_seen=True)), f"last_seen {EPOCH_MS}", id="save-last-seen-bool"
    ),
    pytest.param(
        lambda: conn.save(info(user_agent=None)), "user_agent must be a string", id="save-agent"
    ),
    pytest.param(
        lambda: conn.save(info(source_ip="1" * 65)),
        text_limit("source_ip", 64),
        id="save-long-ip",
    ),
    pytest.param(
        lambda: conn.save(info(expires_at=-1)), f"expires_at {EPOCH_MS}", id="save-expires"
    ),
    pytest.param(lambda: conn.get(""), text_limit("connection_id", 256), id="get-empty"),
    pytest.param(lambda: conn.delete(""), text_limit("connection_id", 256), id="delete-empty"),
    pytest.param(lambda: conn.touch("c1", at_ms=-1), f"at_ms {EPOCH_MS}", id="touch-time"),
    pytest.param(
        lambda: conn.delete("c" * 257), text_limit("connection_id", 256), id="delete-long"
    ),
    pytest.param(lambda: conn.touch("c" * 257), text_limit("connection_id", 256), id="touch-long"),
    pytest.param(
        lambda: conn.set_token("c" * 257, ("a",), 5),
        text_limit("connection_id", 256),
        id="set-token-long",
    ),
    pytest.param(
        lambda: conn.list_by_user("acme", "u" * 257), text_limit("user_id", 256), id="list-user"
    ),
    pytest.param(
        lambda: conn.iter_by_user("acme", "u" * 257), text_limit("user_id", 256), id="iter-user"
    ),
    pytest.param(
        lambda: conn.iter_by_tenant("t" * 65), text_limit("tenant_id", 64), id="iter-tenant"
    ),
    pytest.param(
        lambda: conn.count_by_tenant("a#b"), "tenant_id must not contain '#'", id="count-hash"
    ),
    pytest.param(
        lambda: conn.count_by_user("acme", "u" * 257), text_limit("user_id", 256), id="count-long"
    ),
    pytest.param(
        lambda: conn.set_token("c1", ("a",), expires_at=-1),
        f"expires_at {EPOCH_MS}",
        id="set-token-expiry",
    ),
    pytest.param(lambda: conn.set_token("c1", ("",), 5), PERMISSIONS, id="set-token-perm"),
    pytest.param(
        lambda: conn.list_by_user("acme", "alice", limit=0),
        "limit must be an integer >= 1",
        id="limit-zero",
    ),
    pytest.param(
        lambda: conn.list_by_tenant("acme", limit=101),
        "limit must be at most 100",
        id="limit-over",
    ),
    pytest.param(
        lambda: conn.list_by_tenant("acme", cursor="!!"), "invalid cursor", id="cursor-garbage"
    ),
    pytest.param(
        lambda: conn.count_by_user("acme", ""), text_limit("user_id", 256), id="count-user"
    ),
    pytest.param(
        lambda: drain(conn.iter_expired(before_ms=-1)), f"before_ms {EPOCH_MS}", id="expired"
    ),
    pytest.param(lambda: conn.delete_stale(0), STALE_AGE, id="stale-zero"),
    pytest.param(lambda: conn.delete_stale(1.5), STALE_AGE, id="stale-float"),
    pytest.param(
        lambda: conn.delete_stale(10, on_progress=5),
        "on_progress must be callable",
        id="stale-callback",
    ),
    # subscription store
    pytest.param(
        lambda: subs.subscribe("", "c1", "channels", "a"),
        text_limit("request_key", 1024),
        id="subscribe-key",
    ),
    pytest.param(
        lambda: subs.subscribe("r1", "c" * 257, "channels", "a"),
        text_limit("connection_id", 256),
        id="subscribe-connection",
    ),
    pytest.param(lambda: subs.subscribe("r1", "c1", "sse", "a"), TRANSPORT, id="subscribe-sse"),
    pytest.param(
        lambda: subs.subscribe("r1", "c1", "apigw", "a" * 2049),
        text_limit("address", 2048),
        id="subscribe-address",
    ),
    pytest.param(
        lambda: subs.unsubscribe("r" * 1025, "c1"), text_limit("request_key", 1024), id="unsub"
    ),
    pytest.param(
        lambda: subs.list_by_connection("c" * 257),
        text_limit("connection_id", 256),
        id="list-by-connection",
    ),
    pytest.param(
        lambda: subs.delete_many("c1", "r1"),
        "request_keys must be an iterable of strings, not a string",
        id="delete-many-string",
    ),
    # heartbeats
    pytest.param(
        lambda: heartbeat.beat("", started_at=0, jobs=0), text_limit("worker_id", 256), id="beat"
    ),
    pytest.param(
        lambda: heartbeat.beat("w", started_at=-1, jobs=0),
        "started_at must be an integer >= 0",
        id="beat-started",
    ),
    pytest.param(
        lambda: heartbeat.beat("w", started_at=0, jobs=True),
        "jobs must be an integer >= 0",
        id="beat-jobs",
    ),
    pytest.param(
        lambda: heartbeat.beat("w", started_at=0, jobs=0, now=-1),
        "now must be an integer >= 0",
        id="beat-now",
    ),
    pytest.param(lambda: heartbeat.forget("w" * 257), text_limit("worker_id", 256), id="forget"),
    pytest.param(
        lambda: heartbeat.list_heartbeats(now=-1),
        "now must be an integer >= 0",
        id="list-heartbeats-now",
    ),
]


@pytest.mark.parametrize(("call", "message"), VALIDATION_MESSAGES)
def test_validation_error_names_the_argument_and_its_limit(
    no_network: list[str], call: Callable[[], Any], message: str
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        call()
    assert str(excinfo.value) == message
    assert no_network == []


OPERATIONS: list[Any] = [
    pytest.param(lambda: conn.save(info()), "connection.save", id="save"),
    pytest.param(lambda: conn.get("c1"), "connection.get", id="get"),
    pytest.param(lambda: conn.delete("c1"), "connection.delete", id="delete"),
    pytest.param(lambda: conn.touch("c1"), "connection.touch", id="touch"),
    pytest.param(lambda: conn.set_token("c1", ("a",), 5), "connection.set_token", id="token"),
    pytest.param(
        lambda: conn.list_by_user("acme", "alice"), "connection.list_by_user", id="list-user"
    ),
    pytest.param(lambda: conn.list_by_tenant("acme"), "connection.list_by_tenant", id="list-t"),
    pytest.param(
        lambda: drain(conn.iter_by_user("acme", "alice")), "connection.iter_by_user", id="iter-u"
    ),
    pytest.param(
        lambda: drain(conn.iter_by_tenant("acme")), "connection.iter_by_tenant", id="iter-t"
    ),
    pytest.param(lambda: conn.count_by_tenant("acme"), "connection.count_by_tenant", id="count"),
    pytest.param(
        lambda: conn.count_by_user("acme", "alice"), "connection.count_by_user", id="count-u"
    ),
    pytest.param(lambda: drain(conn.iter_expired(5)), "connection.iter_expired", id="expired"),
    pytest.param(lambda: conn.delete_stale(60_000), "connection.delete_stale", id="stale"),
    pytest.param(
        lambda: subs.subscribe("r1", "c1", "channels", "a"), "subscription.subscribe", id="sub"
    ),
    pytest.param(lambda: subs.unsubscribe("r1", "c1"), "subscription.unsubscribe", id="unsub"),
    pytest.param(
        lambda: subs.list_by_request("r1"), "subscription.list_by_request", id="list-request"
    ),
    pytest.param(
        lambda: subs.list_by_connection("c1"), "subscription.list_by_connection", id="list-conn"
    ),
    pytest.param(
        lambda: subs.delete_by_connection("c1"), "subscription.delete_by_connection", id="del-c"
    ),
    pytest.param(lambda: subs.delete_many("c1", ["r1"]), "subscription.delete_many", id="del-m"),
    pytest.param(lambda: heartbeat.beat("w", started_at=0, jobs=0), "heartbeat.beat", id="beat"),
    pytest.param(lambda: heartbeat.forget("w"), "heartbeat.forget", id="forget"),
    pytest.param(lambda: heartbeat.list_heartbeats(), "heartbeat.list", id="list-heartbeats"),
]


@pytest.mark.parametrize(("call", "operation"), OPERATIONS)
def test_throttled_storage_error_names_the_operation(
    unreachable: base.StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
    call: Callable[[], Any],
    operation: str,
) -> None:
    calls = fail_calls_with(monkeypatch, "ThrottlingException")
    with pytest.raises(StorageUnavailable) as excinfo:
        call()
    assert str(excinfo.value) == f"storage unavailable during {operation}"
    assert calls


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: conn.get("nobody"), id="get"),
        pytest.param(lambda: conn.touch("nobody"), id="touch"),
        pytest.param(lambda: conn.set_token("nobody", ("a",), 5), id="set_token"),
    ],
)
def test_unknown_connection_is_not_found_with_a_plain_message(
    dynamodb: base.StoreConfig, call: Callable[[], Any]
) -> None:
    with pytest.raises(NotFound) as excinfo:
        call()
    assert str(excinfo.value) == "connection not found"
