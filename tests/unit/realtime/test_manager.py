"""The connection manager: pushing frames to connections, users, tenants, requests."""

from __future__ import annotations

import time
from typing import Any

import pytest

from connections import manager as manager_module
from connections.manager import SUBSCRIBER_CACHE_S, ConnectionManager, Target, manager
from connections.transports import ConnectionGone, Transport, TransportError, transports
from protocol import frames
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound
from storage.subscription import subscription_store

from .helpers import connected, make_token

pytestmark = pytest.mark.django_db(transaction=True)


class FakeTransport(Transport):
    """Records what it is asked to do; addresses decide the outcome."""

    def __init__(self, name: str, **config: Any) -> None:
        super().__init__(name, **config)
        self.sent: list[tuple[str, str]] = []
        self.closed: list[tuple[str, int, str]] = []

    async def send(self, address: str, frame: dict[str, Any], text: str) -> None:
        if address == "gone":
            raise ConnectionGone("410")
        if address == "broken":
            raise TransportError("500")
        self.sent.append((address, text))

    async def close(self, address: str, code: int, reason: str = "") -> None:
        if address == "gone":
            raise ConnectionGone("410")
        if address == "broken":
            raise TransportError("500")
        self.closed.append((address, code, reason))


@pytest.fixture
def fake():
    """A transport registered under the name "apigw" (records say apigw)."""
    saved = transports._backends.get("apigw")
    transport = FakeTransport("apigw")
    transports.set("apigw", transport)
    yield transport
    if saved is None:
        transports._backends.pop("apigw", None)
    else:
        transports.set("apigw", saved)


def save(cid: str, address: str, user: str = "alice", tenant: str = "acme") -> ConnectionInfo:
    return connection_store.save(
        ConnectionInfo(
            connection_id=cid, tenant_id=tenant, user_id=user, transport="apigw", address=address
        )
    )


async def test_send_to_user_and_tenant_over_real_sockets(live) -> None:
    async with (
        connected(make_token("alice")) as a1,
        connected(make_token("alice")) as a2,
        connected(make_token("bob")) as b,
        connected(make_token("alice", "globex")) as other_tenant,
    ):
        report = await manager.send_to_user("acme", "alice", frames.pong())
        assert report.delivered == 2 and not report.gone and not report.failed
        assert (await a1.recv())["type"] == "pong"
        assert (await a2.recv())["type"] == "pong"
        assert await b.silent(0.05) and await other_tenant.silent(0.05)

        report = await manager.send_to_tenant("acme", frames.response(None, {"hello": 1}))
        assert report.delivered == 3
        for client in (a1, a2, b):
            frame = await client.recv()
            assert frame["data"] == {"hello": 1}
        assert await other_tenant.silent(0.05)


async def test_send_to_one_connection(live, fake) -> None:
    save("c1", "addr-1")
    assert await manager.send("c1", frames.pong())
    assert fake.sent[0][0] == "addr-1"
    assert not await manager.send("missing", frames.pong())
    record = ConnectionInfo("c9", "acme", "alice", "apigw", "addr-9")
    assert await manager.send("c9", frames.pong(), record=record)
    assert fake.sent[-1][0] == "addr-9"


async def test_broadcast_outcomes(live, fake) -> None:
    save("ok", "addr-ok")
    save("dead", "gone")
    subscription_store.subscribe("acme#alice#r", "dead", "apigw", "gone")
    save("sick", "broken")
    report = await manager.broadcast(
        ["ok", "dead", "sick", "unknown", Target("t", "apigw", "addr-t")], frames.pong()
    )
    assert report.delivered == 2
    assert report.gone == ["dead"]
    assert report.failed == ["sick"]
    # a socket that is gone has its record and subscriptions removed
    with pytest.raises(NotFound):
        connection_store.get("dead")
    assert subscription_store.list_by_connection("dead") == []
    connection_store.get("sick")  # a failed send keeps the record
    # the frame was encoded once and sent as text
    assert {text for _, text in fake.sent} == {fake.sent[0][1]}


async def test_send_to_request_adds_origin_once(live, fake) -> None:
    subscription_store.subscribe("acme#alice#r", "s1", "apigw", "addr-s1")
    origin = Target("o1", "apigw", "addr-o1")
    report = await manager.send_to_request("acme#alice#r", frames.pong(), origin=origin)
    assert report.delivered == 2
    assert sorted(a for a, _ in fake.sent) == ["addr-o1", "addr-s1"]
    fake.sent.clear()
    same = Target("s1", "apigw", "addr-s1")
    report = await manager.send_to_request("acme#alice#r", frames.pong(), origin=same)
    assert report.delivered == 1


async def test_subscribers_cached_unless_fresh(live, monkeypatch) -> None:
    local = ConnectionManager()
    subscription_store.subscribe("k", "s1", "apigw", "a1")
    assert [t.connection_id for t in await local.subscribers("k")] == ["s1"]
    subscription_store.subscribe("k", "s2", "apigw", "a2")
    assert [t.connection_id for t in await local.subscribers("k")] == ["s1"], "cached"
    assert len(await local.subscribers("k", fresh=True)) == 2
    # stale entries expire after SUBSCRIBER_CACHE_S
    clock = [time.monotonic() + SUBSCRIBER_CACHE_S + 1]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    subscription_store.unsubscribe("k", "s1")
    assert [t.connection_id for t in await local.subscribers("k")] == ["s2"]


async def test_subscriber_cache_is_bounded(live) -> None:
    local = ConnectionManager()
    for i in range(manager_module.MAX_CACHED_REQUESTS):
        local._subscribers[f"old{i}"] = []
    await local.subscribers("k")
    assert len(local._subscribers) == manager_module.MAX_CACHED_REQUESTS
    assert "k" in local._subscribers and "old0" not in local._subscribers


@pytest.mark.parametrize(
    ("address", "registered", "expected", "remains"),
    [
        ("addr-1", True, True, True),
        ("gone", True, True, False),
        ("broken", True, False, True),
        ("addr-1", False, False, False),
    ],
)
async def test_disconnect(live, fake, address, registered, expected, remains) -> None:
    if registered:
        save("c1", address)
    assert await manager.disconnect("c1", 4000, "bye") is expected
    if expected and remains:
        assert fake.closed == [(address, 4000, "bye")]
    try:
        connection_store.get("c1")
        present = True
    except NotFound:
        present = False
    assert present is remains
