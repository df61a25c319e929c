"""Registrations of concurrent connects stored together (connections/registrations.py):
one write per connection in BatchWriteItem calls of up to 25, a failed batch refuses
its own connects only and leaves none of their records behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from connections.registrations import RegistrationBatcher
from storage import base
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound, StorageUnavailable, ValidationError
from tests.storage.helpers import record_calls, unreachable_fixture  # noqa: F401


def info(n: int | str, user: str | None = None) -> ConnectionInfo:
    return ConnectionInfo(
        connection_id=f"c{n}",
        tenant_id="acme",
        user_id=user or f"u{n}",
        transport="channels",
        address=f"specific.{n}",
    )


def stored(connection_id: str) -> bool:
    try:
        connection_store.get(connection_id)
    except NotFound:
        return False
    return True


Patch = Callable[[Callable[..., Any], BaseClient, str, dict[str, Any]], Any]


@pytest.fixture
def api_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[[Patch | None], list[str]]:
    """Record every DynamoDB call; an optional ``patch(original, client, op, params)``
    answers them instead (to make some fail)."""
    return lambda patch=None: record_calls(monkeypatch, patch)


async def register_all(batcher: RegistrationBatcher, infos: list[ConnectionInfo]) -> list[Any]:
    return await asyncio.gather(*(batcher.register(i) for i in infos), return_exceptions=True)


@pytest.mark.parametrize(
    ("connects", "expected_calls"),
    [
        (1, ["PutItem"]),  # a lone connect
        (25, ["BatchWriteItem"]),
        (26, ["BatchWriteItem", "PutItem"]),
        (60, ["BatchWriteItem"] * 3),
    ],
)
async def test_concurrent_connects_are_stored_25_per_batch_write(
    dynamodb: base.StoreConfig, api_calls: Any, connects: int, expected_calls: list[str]
) -> None:
    calls = api_calls()
    outcomes = await register_all(RegistrationBatcher(), [info(n) for n in range(connects)])
    assert outcomes == [None] * connects
    assert sorted(calls) == sorted(expected_calls)  # one write per connection
    assert connection_store.count_by_tenant("acme") == connects
    assert connection_store.get("c0").user_id == "u0"


def _fail_batch_of(connection_id: str, *, after_storing: bool) -> Patch:
    """The BatchWriteItem storing ``connection_id`` fails as throttling past retries
    would; with ``after_storing`` DynamoDB stored its items before the failure."""

    def patch(original: Any, client: BaseClient, op: str, params: dict[str, Any]) -> Any:
        text = str(params)
        if op == "BatchWriteItem" and "PutRequest" in text and f"'{connection_id}'" in text:
            if after_storing:
                original(client, op, params)
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}
            raise ClientError(error, op)  # type: ignore[arg-type]
        return original(client, op, params)

    return patch


@pytest.mark.parametrize("after_storing", [False, True], ids=["nothing-stored", "all-stored"])
async def test_a_failed_batch_refuses_its_connects_and_keeps_none_of_their_records(
    dynamodb: base.StoreConfig, api_calls: Any, after_storing: bool
) -> None:
    api_calls(_fail_batch_of("c0", after_storing=after_storing))
    infos = [info(n) for n in range(26)]
    outcomes = await register_all(RegistrationBatcher(), infos)
    first, second = outcomes[:25], outcomes[25:]
    assert all(isinstance(o, StorageUnavailable) for o in first), first
    assert second == [None]
    assert [stored(i.connection_id) for i in infos] == [False] * 25 + [True]


async def test_a_bad_record_is_refused_alone_before_any_call(
    dynamodb: base.StoreConfig, api_calls: Any
) -> None:
    calls = api_calls()
    bad = ConnectionInfo("c-bad", "acme", "u", transport="carrier-pigeon", address="x")
    outcomes = await register_all(RegistrationBatcher(), [info(1), bad, info(2)])
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], ValidationError)
    assert calls == ["BatchWriteItem"]
    assert (stored("c1"), stored("c-bad"), stored("c2")) == (True, False, True)


async def test_storage_down_refuses_every_connect_of_the_storm(
    unreachable: base.StoreConfig,
) -> None:
    outcomes = await register_all(RegistrationBatcher(), [info(n) for n in range(30)])
    assert all(isinstance(o, StorageUnavailable) for o in outcomes), outcomes


async def test_batches_in_flight_are_bounded_and_the_rest_wait_for_them(
    dynamodb: base.StoreConfig, api_calls: Any
) -> None:
    """With one batch in flight at a time, connects arriving meanwhile fill the next
    batch instead of each starting a call of its own."""
    calls = api_calls()
    batcher = RegistrationBatcher(batch_size=25, in_flight=1)
    first = asyncio.ensure_future(batcher.register(info("first")))
    await asyncio.sleep(0)  # the first batch (of one) is on its way
    rest = await register_all(batcher, [info(n) for n in range(30)])
    await first
    assert rest == [None] * 30
    assert calls == ["PutItem", "BatchWriteItem", "BatchWriteItem"]  # 1, then 25, then 5
    assert connection_store.count_by_tenant("acme") == 31


async def test_a_connect_cancelled_while_waiting_is_not_stored(
    dynamodb: base.StoreConfig,
) -> None:
    batcher = RegistrationBatcher()
    kept = asyncio.ensure_future(batcher.register(info("kept")))
    gone = asyncio.ensure_future(batcher.register(info("gone")))
    await asyncio.sleep(0)  # both wait for the next turn of the loop
    gone.cancel()
    await kept
    assert (stored("ckept"), stored("cgone")) == (True, False)


@pytest.mark.parametrize("threads", [2, 6])
def test_event_loops_in_several_threads_share_one_batcher(
    dynamodb: base.StoreConfig, threads: int
) -> None:
    """Each thread runs its own event loop (like a server thread): its connects are
    answered on its own loop and every record is stored once."""
    batcher = RegistrationBatcher()
    barrier = threading.Barrier(threads)
    results: dict[int, list[Any]] = {}

    def server(t: int) -> None:
        infos = [info(f"{t}-{n}") for n in range(30)]
        barrier.wait()
        results[t] = asyncio.run(register_all(batcher, infos))

    workers = [threading.Thread(target=server, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(outcomes == [None] * 30 for outcomes in results.values()), results
    assert len(results) == threads
    assert connection_store.count_by_tenant("acme") == threads * 30


async def test_a_connect_cancelled_while_its_batch_is_stored_leaves_no_record(
    dynamodb: base.StoreConfig,
) -> None:
    batcher = RegistrationBatcher()
    gone = asyncio.ensure_future(batcher.register(info("gone")))
    for _ in range(3):
        await asyncio.sleep(0)  # its batch leaves and is on its way to storage
    gone.cancel()
    for _ in range(200):  # until the batch was stored and the record removed again
        if not stored("cgone") and not batcher._queues.get(asyncio.get_running_loop()).tasks:
            break
        await asyncio.sleep(0.05)
    assert gone.cancelled()
    assert not stored("cgone")
