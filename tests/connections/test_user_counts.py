"""Users' connection counts gathered per tenant (connections/user_counts.py): a few
waiting users are counted one by one, many by one tenant query; every count starts
after the call that asked for it; storage failures reach every waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from botocore.client import BaseClient

from connections.user_counts import UserCounts
from storage import base
from storage.connection import ConnectionInfo, connection_store
from storage.errors import StorageUnavailable
from tests.storage.helpers import record_calls, unreachable_fixture  # noqa: F401


def info(n: int | str, user: str, tenant: str = "acme") -> ConnectionInfo:
    return ConnectionInfo(
        connection_id=f"c{n}-{tenant}-{user}",
        tenant_id=tenant,
        user_id=user,
        transport="channels",
        address=f"specific.{n}",
    )


def store_connections(per_user: dict[str, int], tenant: str = "acme") -> None:
    connection_store.save_many(
        [info(n, user, tenant) for user, count in per_user.items() for n in range(count)]
    )


async def count_all(counts: UserCounts, users: list[str]) -> list[Any]:
    return await asyncio.gather(*(counts.count("acme", u) for u in users), return_exceptions=True)


@pytest.mark.parametrize(
    ("waiting", "min_users", "expected_calls"),
    [
        (1, 4, ["Query"]),  # a lone connect: its own count
        (3, 4, ["Query"] * 3),  # a few: one by one
        (4, 4, ["Query"]),  # enough: one tenant query answers them all
        (40, 4, ["Query"]),
    ],
)
async def test_waiting_users_are_counted_one_by_one_or_by_one_tenant_query(
    dynamodb: base.StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
    waiting: int,
    min_users: int,
    expected_calls: list[str],
) -> None:
    users = [f"u{i}" for i in range(waiting)]
    store_connections({u: 1 + i % 3 for i, u in enumerate(users)})
    store_connections({"u0": 5}, tenant="other")  # another tenant's are not counted
    calls = record_calls(monkeypatch)
    answers = await count_all(UserCounts(min_users=min_users), users)
    assert answers == [1 + i % 3 for i in range(waiting)]
    assert calls == expected_calls


async def test_a_tenant_too_big_for_the_batch_is_counted_user_by_user(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_connections({"big": 30})
    users = ["big", "u1", "u2", "u3"]
    calls = record_calls(monkeypatch)
    # 4 users x 5 rows = 20 rows at most: the tenant's 30 rows are too many
    answers = await count_all(UserCounts(min_users=4, rows_per_user=5), users)
    assert answers == [30, 0, 0, 0]
    assert calls == ["Query"] + ["Query"] * 4  # the tenant query gave up, then each user


async def test_the_same_user_waiting_twice_gets_one_count(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_connections({"alice": 2})
    calls = record_calls(monkeypatch)
    assert await count_all(UserCounts(), ["alice", "alice", "alice"]) == [2, 2, 2]
    assert calls == ["Query"]


async def test_a_count_asked_while_one_is_in_flight_starts_after_it(
    dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second connect stored its record while the first count was running: its
    count must be a later query, which sees that record."""
    counts = UserCounts()
    first_running = asyncio.Event()
    release_first = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_first(original: Callable[..., Any], client: BaseClient, op: str, params: Any) -> Any:
        if not first_running.is_set():
            loop.call_soon_threadsafe(first_running.set)
            asyncio.run_coroutine_threadsafe(release_first.wait(), loop).result(10)
        return original(client, op, params)

    store_connections({"alice": 1})
    calls = record_calls(monkeypatch, slow_first)
    first = asyncio.ensure_future(counts.count("acme", "alice"))
    await first_running.wait()
    store_connections({"bob": 1})
    second = asyncio.ensure_future(counts.count("acme", "bob"))
    await asyncio.sleep(0)
    release_first.set()
    assert (await first, await second) == (1, 1)
    assert calls == ["Query", "BatchWriteItem", "Query"]  # bob's count after his write


@pytest.mark.parametrize("waiting", [1, 3, 20])
async def test_storage_down_fails_every_waiting_count(
    unreachable: base.StoreConfig, waiting: int
) -> None:
    answers = await count_all(UserCounts(min_users=4), [f"u{i}" for i in range(waiting)])
    assert all(isinstance(a, StorageUnavailable) for a in answers), answers


async def test_a_cancelled_count_does_not_disturb_the_others(
    dynamodb: base.StoreConfig,
) -> None:
    store_connections({"alice": 1, "bob": 2})
    counts = UserCounts()
    gone = asyncio.ensure_future(counts.count("acme", "alice"))
    kept = asyncio.ensure_future(counts.count("acme", "bob"))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == 2
    assert gone.cancelled()
