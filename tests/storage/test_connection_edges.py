"""Edges of :mod:`storage.connection` a caller relies on: a delete scoped to one
transport and address, default page sizes and the expiry cut-off."""

from __future__ import annotations

import pytest

from storage import base
from storage import connection as connection_module
from storage.connection import ConnectionInfo, connection_store
from storage.errors import ValidationError
from tests.storage.helpers import no_network_fixture  # noqa: F401

store = connection_store
ADDRESS = "specific.c1!abc"


def info(connection_id: str = "c1", **overrides: object) -> ConnectionInfo:
    fields: dict[str, object] = {"transport": "channels", "address": ADDRESS}
    fields.update(overrides)
    return ConnectionInfo(connection_id, "acme", "alice", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("at", "deleted"),
    [
        pytest.param(("channels", ADDRESS), True, id="same-transport-and-address"),
        pytest.param(("apigw", ADDRESS), False, id="other-transport"),
        pytest.param(("channels", "specific.other!x"), False, id="other-address"),
        pytest.param(("apigw", "https://elsewhere"), False, id="both-differ"),
    ],
)
def test_a_delete_at_an_address_removes_only_that_socket(
    dynamodb: base.StoreConfig, at: tuple[str, str], deleted: bool
) -> None:
    store.save(info())
    assert store.delete("c1", at=at) is deleted
    remaining = [c.connection_id for c in store.iter_by_user("acme", "alice")]
    assert remaining == ([] if deleted else ["c1"])


def test_a_delete_at_an_address_of_an_unknown_connection_is_false(
    dynamodb: base.StoreConfig,
) -> None:
    assert store.delete("nobody", at=("channels", ADDRESS)) is False


def test_lists_default_to_pages_of_fifty(dynamodb: base.StoreConfig) -> None:
    for n in range(51):
        store.save(info(f"c{n:02}", connected_at=1_000 + n, last_seen=2_000))
    by_user = store.list_by_user("acme", "alice")
    by_tenant = store.list_by_tenant("acme")
    assert len(by_user.items) == len(by_tenant.items) == 50
    assert by_user.cursor is not None and by_tenant.cursor is not None
    assert [
        c.connection_id for c in store.list_by_user("acme", "alice", cursor=by_user.cursor).items
    ] == ["c00"]


@pytest.mark.parametrize(
    ("expires_at", "listed"),
    [
        pytest.param(4_999, True, id="before-cutoff"),
        pytest.param(5_000, False, id="at-cutoff"),
    ],
)
def test_iter_expired_lists_tokens_that_expired_strictly_before(
    dynamodb: base.StoreConfig, expires_at: int, listed: bool
) -> None:
    store.save(info(expires_at=expires_at))
    assert [c for c, _, _ in store.iter_expired(before_ms=5_000)] == (["c1"] if listed else [])


@pytest.mark.parametrize(
    ("last_seen", "deleted"),
    [
        pytest.param(8_999, 1, id="older-than-the-age"),
        pytest.param(9_000, 0, id="exactly-the-age"),
    ],
)
def test_delete_stale_removes_connections_strictly_older_than_the_age(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch, last_seen: int, deleted: int
) -> None:
    store.save(info(connected_at=1_000, last_seen=last_seen))
    monkeypatch.setattr(connection_module, "now_ms", lambda: 10_000)
    assert store.delete_stale(1_000) == deleted


def test_a_cursor_of_another_shape_is_invalid(no_network: list[str]) -> None:
    cursor = base.encode_cursor({"connection_id": {"S": "c1"}, "owner": {"S": "acme#alice"}})
    with pytest.raises(ValidationError) as excinfo:
        store.list_by_tenant("acme", cursor=cursor)
    assert str(excinfo.value) == "invalid cursor"
