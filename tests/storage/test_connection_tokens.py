"""Connection-store operations behind the token rules: per-user counts, a refreshed
token recorded on the connection, expired connections found by the by_expiry index."""

from __future__ import annotations

import asyncio

import pytest

from storage.base import now_ms
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound, StorageUnavailable, ValidationError
from streaming import user_cap
from streaming.auth import AuthFailure, Identity


def info(cid: str, user: str = "u1", expires_at: int | None = None) -> ConnectionInfo:
    return ConnectionInfo(cid, "acme", user, "channels", f"chan.{cid}", expires_at=expires_at)


def test_count_by_user_counts_only_that_user(dynamodb) -> None:
    for cid, user in [("a", "u1"), ("b", "u1"), ("c", "u2")]:
        connection_store.save(info(cid, user))
    assert connection_store.count_by_user("acme", "u1") == 2
    assert connection_store.count_by_user("acme", "u3") == 0


def test_set_token_records_permissions_and_expiry(dynamodb) -> None:
    connection_store.save(info("a", expires_at=now_ms() + 1000))
    connection_store.set_token("a", ("p", "q"), 4_000_000_000_000)
    stored = connection_store.get("a")
    assert (stored.permissions, stored.expires_at) == (("p", "q"), 4_000_000_000_000)
    with pytest.raises(NotFound):
        connection_store.set_token("ghost", (), 1)


@pytest.mark.parametrize(
    ("cid", "permissions", "expires_at"),
    [("", (), 1), ("a", ("",), 1), ("a", (), -1), ("a", (), True)],
)
def test_set_token_validates_before_any_call(cid, permissions, expires_at) -> None:
    with pytest.raises(ValidationError):
        connection_store.set_token(cid, permissions, expires_at)


def test_iter_expired_finds_only_expired_connections(dynamodb) -> None:
    now = now_ms()
    connection_store.save(info("old", expires_at=now - 1000))
    connection_store.save(info("new", expires_at=now + 3_600_000))
    connection_store.save(info("none"))  # no expiry recorded: never listed
    assert [c for c, _, _ in connection_store.iter_expired()] == ["old"]
    assert sorted(c for c, _, _ in connection_store.iter_expired(now + 7_200_000)) == [
        "new",
        "old",
    ]
    [(_, transport, address)] = connection_store.iter_expired()
    assert (transport, address) == ("channels", "chan.old")


def test_a_count_failure_after_registering_leaves_no_record(moto_dynamodb, monkeypatch) -> None:
    connection_store.save(info("mine"))
    identity = Identity("acme", "u1", frozenset())

    def down(*args: object) -> int:
        raise StorageUnavailable("storage unavailable")

    monkeypatch.setattr(connection_store, "count_by_user", down)
    with pytest.raises(StorageUnavailable):
        asyncio.run(user_cap.confirm(identity, "mine", 5))
    with pytest.raises(NotFound):
        connection_store.get("mine")
    # the delete failing too is logged, and the refusal still stands
    monkeypatch.setattr(connection_store, "delete", down)
    with pytest.raises(StorageUnavailable):
        asyncio.run(user_cap.confirm(identity, "other", 5))


def test_refusal_over_the_limit_removes_the_own_record(moto_dynamodb) -> None:
    for cid in ("a", "b", "c"):
        connection_store.save(info(cid))
    with pytest.raises(AuthFailure) as failure:
        asyncio.run(user_cap.confirm(Identity("acme", "u1", frozenset()), "c", 2))
    assert failure.value.close_code == 4429
    assert connection_store.count_by_user("acme", "u1") == 2
