"""Edges of :mod:`storage.connection` a caller relies on: a delete scoped to one
transport and address, default page sizes and the expiry cut-off."""

from __future__ import annotations

import pytest

from storage import base
from storage.connection import ConnectionInfo, connection_store

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
