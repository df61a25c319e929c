"""The tenant connection limit under a burst of simultaneous connects in one process
(the process-level flood is in test_hostile_sockets.py): every connect of the burst
used to see the same cached count, so all of them got in."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import streaming.session as session_module
from connections.tenants import TenantPolicy
from storage.connection import connection_store
from storage.errors import StorageUnavailable
from streaming.auth import STORAGE_DOWN, TOO_MANY_CONNECTIONS, AuthFailure, Identity
from streaming.session import Session, open_session

LIMIT = 5


@pytest.fixture
def limited(monkeypatch: pytest.MonkeyPatch, moto_dynamodb: Any, db: None) -> TenantPolicy:
    # db: the lookup runs through database_sync_to_async, which cleans up connections
    policy = TenantPolicy("burst", True, LIMIT, 100, 10)
    monkeypatch.setattr(session_module, "get_tenant_policy", lambda tenant_id: policy)
    return policy


async def connect(i: int) -> Session:
    return await open_session(
        Identity("burst", f"user-{i}", frozenset()),
        connection_id=f"conn-{i}",
        transport="channels",
        address=f"specific.test!{i}",
    )


@pytest.mark.parametrize("warm", [False, True], ids=["cold-cache", "warm-cache"])
async def test_a_burst_of_connects_cannot_exceed_the_limit(
    limited: TenantPolicy, warm: bool
) -> None:
    if warm:
        await connect(-1)  # the count is cached, one slot is taken
    results = await asyncio.gather(*(connect(i) for i in range(6 * LIMIT)), return_exceptions=True)
    accepted = [r for r in results if isinstance(r, Session)]
    refused = [r for r in results if isinstance(r, AuthFailure)]
    assert len(accepted) + len(refused) == len(results), results
    assert {r.close_code for r in refused} == {TOO_MANY_CONNECTIONS}
    assert len(accepted) == LIMIT - warm
    assert connection_store.count_by_tenant("burst") == LIMIT


async def test_a_failed_registration_gives_its_slot_back(
    limited: TenantPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    await connect(0)  # caches the count
    real_save = connection_store.save
    calls = {"n": 0}

    def flaky_save(info: Any) -> None:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise StorageUnavailable("storage unavailable during connection.save")
        real_save(info)

    monkeypatch.setattr(connection_store, "save", flaky_save)
    for i in range(1, 4):
        with pytest.raises(AuthFailure) as failure:
            await connect(i)
        assert failure.value.close_code == STORAGE_DOWN
    # The three failures reserved nothing: the remaining slots are all still there.
    sessions = [await connect(i) for i in range(4, 4 + LIMIT - 1)]
    assert len(sessions) == LIMIT - 1
    with pytest.raises(AuthFailure) as failure:
        await connect(99)
    assert failure.value.close_code == TOO_MANY_CONNECTIONS
