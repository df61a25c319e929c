"""The per-user connection cap (streaming/user_cap.py) and what a connect costs: a fresh
user's connect writes once and counts once; a user refused lately is counted first and
refused without a write; a storm of connects refused by storage leaves nothing behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError

from connections.models import Tenant
from connections.tenants import forget_tenant
from storage import base
from storage.connection import connection_store
from streaming.auth import STORAGE_DOWN, TOO_MANY_CONNECTIONS, AuthFailure, Identity
from streaming.session import Session, open_session
from tests.storage.helpers import record_calls, unreachable_config

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 2


@pytest.fixture
def tenant(moto_dynamodb: base.StoreConfig) -> str:
    Tenant.objects.create(id="cap", max_connections=0, max_connections_per_user=LIMIT)
    forget_tenant()
    return "cap"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every DynamoDB operation made from now on, in order."""
    return record_calls(monkeypatch)


def user(name: str) -> Identity:
    return Identity(tenant_id="cap", user_id=name, permissions=frozenset())


async def connect(identity: Identity, connection_id: str) -> Session | AuthFailure:
    try:
        return await open_session(
            identity, connection_id=connection_id, transport="channels", address="a"
        )
    except AuthFailure as failure:
        return failure


def code(outcome: Session | AuthFailure) -> int | str:
    return outcome.close_code if isinstance(outcome, AuthFailure) else "accepted"


@pytest.mark.parametrize(
    ("already", "expected_code", "expected_calls"),
    [
        pytest.param(0, "accepted", ["PutItem", "Query"], id="fresh-user"),
        pytest.param(1, "accepted", ["PutItem", "Query"], id="last-slot"),
        # not refused here before: it writes, counts, and removes its own record
        pytest.param(LIMIT, TOO_MANY_CONNECTIONS, ["PutItem", "Query", "DeleteItem"], id="full"),
    ],
)
async def test_what_a_connect_costs(
    tenant: str, calls: list[str], already: int, expected_code: Any, expected_calls: list[str]
) -> None:
    for n in range(already):
        assert code(await connect(user("ann"), f"old{n}")) == "accepted"
    calls.clear()
    assert code(await connect(user("ann"), "new")) == expected_code
    assert calls == expected_calls
    assert connection_store.count_by_user("cap", "ann") == min(already + 1, LIMIT)


async def test_a_refused_user_is_counted_first_and_refused_without_a_write(
    tenant: str, calls: list[str]
) -> None:
    for n in range(LIMIT):
        await connect(user("ann"), f"old{n}")
    assert code(await connect(user("ann"), "over")) == TOO_MANY_CONNECTIONS
    calls.clear()
    assert code(await connect(user("ann"), "again")) == TOO_MANY_CONNECTIONS
    assert calls == ["Query"]
    # another user is still fresh: no count before its write
    calls.clear()
    assert code(await connect(user("bob"), "bob1")) == "accepted"
    assert calls == ["PutItem", "Query"]
    # a freed slot is taken again (the remembered user is counted, finds room)
    connection_store.delete("old0")
    calls.clear()
    assert code(await connect(user("ann"), "back")) == "accepted"
    assert calls == ["Query", "PutItem", "Query"]
    assert connection_store.count_by_user("cap", "ann") == LIMIT


@pytest.mark.parametrize("users", [1, 3])
async def test_a_storm_keeps_every_user_within_the_cap(
    tenant: str, calls: list[str], users: int
) -> None:
    """Many connects of a few users at once on one loop: each user ends with at most
    the limit, records match the accepted sockets, and the writes were batched."""
    per_user = 12
    assert code(await connect(user("warm"), "warm")) == "accepted"  # the tenant is cached
    calls.clear()
    outcomes = await asyncio.gather(
        *(connect(user(f"u{u}"), f"u{u}-{n}") for u in range(users) for n in range(per_user))
    )
    for u in range(users):
        mine = outcomes[u * per_user : (u + 1) * per_user]
        accepted = [o for o in mine if isinstance(o, Session)]
        assert len(accepted) <= LIMIT
        assert {code(o) for o in mine if not isinstance(o, Session)} <= {TOO_MANY_CONNECTIONS}
        assert connection_store.count_by_user("cap", f"u{u}") == len(accepted)
    # one write per connection, 25 to a call: they all arrived on the same turn
    assert calls.count("PutItem") == 0
    assert calls.count("BatchWriteItem") == -(-users * per_user // 25)


async def test_storage_down_during_a_storm_closes_every_connect_1011_and_stores_nothing(
    tenant: str,
) -> None:
    identities = [user(f"s{n}") for n in range(30)]
    working = base.current_config()
    base.configure(unreachable_config())
    outcomes = await asyncio.gather(*(connect(i, f"s{n}") for n, i in enumerate(identities)))
    base.configure(working)
    assert [code(o) for o in outcomes] == [STORAGE_DOWN] * 30
    assert all(o.reason == "Service unavailable, try again later" for o in outcomes)  # type: ignore[union-attr]
    assert connection_store.count_by_tenant("cap") == 0


async def test_a_count_failing_after_the_write_closes_1011_and_removes_the_record(
    tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_counts(original: Any, client: Any, op: str, params: dict[str, Any]) -> Any:
        if op == "Query":
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}
            raise ClientError(error, op)
        return original(client, op, params)

    made = record_calls(monkeypatch, no_counts)
    assert code(await connect(user("ann"), "counted")) == STORAGE_DOWN
    assert made == ["PutItem", "Query", "DeleteItem"]
    monkeypatch.undo()
    assert connection_store.count_by_tenant("cap") == 0
