"""ConnectionManager: delivery to one connection, a user, a tenant, a request's
subscribers or a list of targets; gone sockets cleaned up; bounded fan-out; closing a
socket. One recording transport stands in for the real ones; one test goes through
real (ASGI) sockets."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from channels.layers import InMemoryChannelLayer

from connections import manager as manager_module
from connections.manager import SUBSCRIBER_CACHE_S, ConnectionManager, SendReport, Target, manager
from connections.transports import ConnectionGone, Transport, TransportError, transports
from protocol import frames
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound, StorageUnavailable
from storage.requests.store import RequestStore
from storage.subscription import subscription_store
from tests.support.sockets import connected, make_token
from tests.support.worker import ApiCalls, FakeSocket

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")


class RecordingTransport(Transport):
    """Remembers every send; an address starting with ``gone`` / ``fail`` raises."""

    def __init__(self, name: str = "channels", **config: Any) -> None:
        super().__init__(name, **config)
        self.sent: list[tuple[str, dict[str, Any], str]] = []
        self.closed: list[tuple[str, int, str]] = []
        self.in_flight = 0
        self.peak = 0

    def _check(self, address: str) -> None:
        if address.startswith("gone"):
            raise ConnectionGone("410")
        if address.startswith("fail"):
            raise TransportError("throttled")

    async def send(self, address: str, frame: dict[str, Any], text: str) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0)  # a real send yields: let others overlap
            self._check(address)
            self.sent.append((address, frame, text))
        finally:
            self.in_flight -= 1

    async def close(self, address: str, code: int, reason: str = "") -> None:
        self._check(address)
        self.closed.append((address, code, reason))


@pytest.fixture
def recording() -> RecordingTransport:
    """In place of the Channels transport (restored by the channel_layer fixture)."""
    transport = RecordingTransport()
    transports.set("channels", transport)
    return transport


@pytest.fixture
def recording_apigw() -> RecordingTransport:
    """In place of the API Gateway transport, for records that say ``apigw``."""
    transport = RecordingTransport("apigw")
    transports.set("apigw", transport)
    return transport


def conn_id() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


def save(tenant: str = "acme", user: str = "alice", address: str | None = None) -> ConnectionInfo:
    cid = conn_id()
    return connection_store.save(
        ConnectionInfo(
            connection_id=cid,
            tenant_id=tenant,
            user_id=user,
            transport="channels",
            address=address or f"addr-{cid}",
        )
    )


FRAME = frames.response("r-1", {"hello": "world"})


# --- one connection ----------------------------------------------------------------------


async def test_send_with_a_record_reads_no_storage(
    store: RequestStore, api_calls: ApiCalls, recording: RecordingTransport
) -> None:
    info = await asyncio.to_thread(save)
    api_calls.clear()
    assert await ConnectionManager().send(info.connection_id, FRAME, record=info)
    assert api_calls.count() == 0
    [(address, frame, text)] = recording.sent
    assert (address, frame) == (info.address, FRAME)
    assert orjson.loads(text) == FRAME


async def test_send_without_a_record_reads_it_once(
    store: RequestStore, api_calls: ApiCalls, recording: RecordingTransport
) -> None:
    info = await asyncio.to_thread(save)
    api_calls.clear()
    assert await ConnectionManager().send(info.connection_id, FRAME)
    assert api_calls.calls == ["GetItem"]
    assert [s[0] for s in recording.sent] == [info.address]


async def test_send_to_an_unknown_connection_is_false(
    store: RequestStore, recording: RecordingTransport
) -> None:
    assert not await ConnectionManager().send("nobody-here", FRAME)
    assert recording.sent == []


async def test_a_gone_connection_is_forgotten_with_its_subscriptions(
    store: RequestStore, recording: RecordingTransport
) -> None:
    info = await asyncio.to_thread(save, address="gone-1")
    for key in ("acme#alice#r1", "acme#alice#r2"):
        await asyncio.to_thread(
            subscription_store.subscribe, key, info.connection_id, "channels", "gone-1"
        )
    assert not await ConnectionManager().send(info.connection_id, FRAME, record=info)
    with pytest.raises(NotFound):
        await asyncio.to_thread(connection_store.get, info.connection_id)
    assert await asyncio.to_thread(subscription_store.list_by_connection, info.connection_id) == []


async def test_a_failed_send_is_reported_and_the_connection_kept(
    store: RequestStore, recording: RecordingTransport
) -> None:
    info = await asyncio.to_thread(save, address="fail-1")
    assert not await ConnectionManager().send(info.connection_id, FRAME, record=info)
    assert (await asyncio.to_thread(connection_store.get, info.connection_id)) == info


# --- fan-out -----------------------------------------------------------------------------


async def test_broadcast_reports_each_outcome(
    store: RequestStore, recording: RecordingTransport
) -> None:
    ok = await asyncio.to_thread(save)
    gone = await asyncio.to_thread(save, address="gone-2")
    failed = await asyncio.to_thread(save, address="fail-2")
    targets: list[Target | str] = [
        Target.of(ok),
        gone.connection_id,  # resolved from storage
        Target.of(failed),
        "not-registered",  # skipped
    ]
    report = await ConnectionManager().broadcast(targets, FRAME)
    assert report == SendReport(
        delivered=1, gone=[gone.connection_id], failed=[failed.connection_id]
    )
    assert [s[0] for s in recording.sent] == [ok.address]
    with pytest.raises(NotFound):
        await asyncio.to_thread(connection_store.get, gone.connection_id)


@pytest.mark.parametrize("concurrency", [1, 16, 256])
async def test_broadcast_to_1000_targets_is_bounded_and_complete(
    recording: RecordingTransport, concurrency: int
) -> None:
    targets = [Target(f"c{i}", "channels", f"addr-{i}") for i in range(1000)]
    report = await ConnectionManager(concurrency=concurrency).broadcast(targets, FRAME)
    assert report.delivered == 1000 and not report.gone and not report.failed
    assert sorted(s[0] for s in recording.sent) == sorted(t.address for t in targets)
    assert recording.peak == concurrency  # reached, never exceeded
    assert len({id(s[2]) for s in recording.sent}) == 1  # encoded once


async def test_every_one_of_1000_sockets_gets_exactly_one_frame(
    channel_layer: InMemoryChannelLayer,
) -> None:
    sockets = [
        FakeSocket(channel_layer, await channel_layer.new_channel("socket."), "u")
        for _ in range(1000)
    ]
    targets = [Target(s.connection_id, "channels", s.channel) for s in sockets]
    report = await ConnectionManager(concurrency=64).broadcast(targets, FRAME)
    assert report.delivered == 1000
    for sock in sockets:
        message = await asyncio.wait_for(channel_layer.receive(sock.channel), 5)
        assert orjson.loads(message["text"]) == FRAME
        assert sock.channel not in channel_layer.channels  # nothing else queued for it


@pytest.mark.parametrize(
    ("scope", "tenant", "user", "expected"),
    [
        ("user", "a", "alice", {"a1", "a2"}),
        ("user", "a", "bob", {"b1"}),
        ("user", "a", "nobody", set()),
        ("tenant", "a", None, {"a1", "a2", "b1"}),
        ("tenant", "o", None, {"o1"}),
        ("tenant", "empty", None, set()),
    ],
)
async def test_send_to_a_user_or_tenant_queries_an_index(
    store: RequestStore,
    api_calls: ApiCalls,
    recording: RecordingTransport,
    scope: str,
    tenant: str,
    user: str | None,
    expected: set[str],
) -> None:
    tenants = {name: f"{name}{uuid.uuid4().hex[:8]}" for name in ("a", "o", "empty")}
    for t, u, name in [
        ("a", "alice", "a1"),
        ("a", "alice", "a2"),
        ("a", "bob", "b1"),
        ("o", "alice", "o1"),
    ]:
        await asyncio.to_thread(save, tenants[t], u, f"{name}-{uuid.uuid4().hex[:4]}")
    mgr = ConnectionManager()
    api_calls.clear()
    if scope == "user":
        assert user is not None
        report = await mgr.send_to_user(tenants[tenant], user, FRAME)
    else:
        report = await mgr.send_to_tenant(tenants[tenant], FRAME)
    assert report.delivered == len(expected)
    assert sorted(s[0].split("-")[0] for s in recording.sent) == sorted(expected)
    assert api_calls.count("Scan") == 0
    assert api_calls.count() == api_calls.count("Query") >= 1


# --- the subscribers of a request ----------------------------------------------------------


async def test_send_to_request_reaches_origin_and_subscribers_once_each(
    store: RequestStore, api_calls: ApiCalls, recording: RecordingTransport
) -> None:
    key = f"acme#alice#{uuid.uuid4().hex}"
    origin = Target("origin-conn", "channels", "addr-origin-conn")
    for cid in ("origin-conn", "tab-2", "phone"):
        await asyncio.to_thread(subscription_store.subscribe, key, cid, "channels", f"addr-{cid}")
    mgr = ConnectionManager()
    report = await mgr.send_to_request(key, FRAME, origin=origin)
    assert report.delivered == 3
    assert sorted(s[0] for s in recording.sent) == ["addr-origin-conn", "addr-phone", "addr-tab-2"]

    # Without subscribers the origin alone gets it; without an origin, subscribers only.
    recording.sent.clear()
    other = f"acme#alice#{uuid.uuid4().hex}"
    assert (await mgr.send_to_request(other, FRAME, origin=origin)).delivered == 1
    assert (await mgr.send_to_request(other, FRAME)).delivered == 0
    assert [s[0] for s in recording.sent] == ["addr-origin-conn"]


async def test_subscribers_are_cached_for_a_second_unless_fresh(
    store: RequestStore,
    api_calls: ApiCalls,
    recording: RecordingTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = f"acme#alice#{uuid.uuid4().hex}"
    await asyncio.to_thread(subscription_store.subscribe, key, "first", "channels", "addr-first")
    mgr = ConnectionManager()
    api_calls.clear()
    assert (await mgr.send_to_request(key, FRAME)).delivered == 1
    assert api_calls.count("Query") == 1
    # A late subscriber: cached progress frames miss it, a fresh (terminal) one does not.
    await asyncio.to_thread(subscription_store.subscribe, key, "late", "channels", "addr-late")
    api_calls.clear()
    assert (await mgr.send_to_request(key, FRAME)).delivered == 1
    assert api_calls.count() == 0
    assert (await mgr.send_to_request(key, FRAME, fresh=True)).delivered == 2
    assert api_calls.count("Query") == 1
    # And the cache expires.
    monkeypatch.setattr(manager_module, "SUBSCRIBER_CACHE_S", 0.05)
    await mgr.subscribers(key, fresh=True)
    await asyncio.sleep(0.1)
    api_calls.clear()
    assert len(await mgr.subscribers(key)) == 2
    assert api_calls.count("Query") == 1


async def test_the_subscriber_cache_stays_bounded(
    store: RequestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr = ConnectionManager()
    monkeypatch.setattr(manager_module, "SUBSCRIBER_CACHE_S", 0.0)
    for i in range(manager_module.MAX_CACHED_REQUESTS):
        mgr._subscribers[f"k{i}"] = []  # all expired at once
    monkeypatch.setattr(manager_module, "SUBSCRIBER_CACHE_S", 1.0)
    await mgr.subscribers("acme#alice#fresh")
    assert list(mgr._subscribers) == ["acme#alice#fresh"]


# --- closing a socket ----------------------------------------------------------------------


async def test_disconnect_sends_a_close_message_to_the_socket(
    store: RequestStore, channel_layer: InMemoryChannelLayer
) -> None:
    channel = await channel_layer.new_channel("socket.")
    info = await asyncio.to_thread(save, address=channel)
    assert await ConnectionManager().disconnect(info.connection_id, 4000, "Disabled by an admin")
    message = await asyncio.wait_for(channel_layer.receive(channel), 5)
    assert message == {"type": "streamer.close", "code": 4000, "reason": "Disabled by an admin"}


@pytest.mark.parametrize(("with_record", "reads"), [(True, []), (False, ["GetItem"])])
async def test_disconnect_reads_the_record_only_when_not_given(
    store: RequestStore,
    api_calls: ApiCalls,
    channel_layer: InMemoryChannelLayer,
    with_record: bool,
    reads: list[str],
) -> None:
    channel = await channel_layer.new_channel("socket.")
    info = await asyncio.to_thread(save, address=channel)
    api_calls.clear()
    record = info if with_record else None
    assert await ConnectionManager().disconnect(info.connection_id, 4403, record=record)
    assert api_calls.calls == reads
    assert (await asyncio.wait_for(channel_layer.receive(channel), 5))["code"] == 4403


@pytest.mark.parametrize(
    ("address", "result", "kept"),
    [("ok-1", True, True), ("gone-3", True, False), ("fail-3", False, True)],
)
async def test_disconnect_outcomes(
    store: RequestStore,
    recording: RecordingTransport,
    address: str,
    result: bool,
    kept: bool,
) -> None:
    info = await asyncio.to_thread(save, address=address)
    assert await ConnectionManager().disconnect(info.connection_id) is result
    if result and kept:
        assert recording.closed == [(address, 1000, "")]
    try:
        await asyncio.to_thread(connection_store.get, info.connection_id)
        exists = True
    except NotFound:
        exists = False
    assert exists is kept


async def test_disconnect_of_an_unknown_connection_is_false(
    store: RequestStore, recording: RecordingTransport
) -> None:
    assert not await ConnectionManager().disconnect("never-connected")
    assert recording.closed == []


async def test_a_cleanup_that_fails_does_not_abort_the_fan_out(
    store: RequestStore, recording: RecordingTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gone socket whose records cannot be deleted right now (storage throttled) is
    still reported gone; the other targets still get the frame."""

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("throttled")

    monkeypatch.setattr(connection_store, "delete", down)
    targets = [Target("g", "channels", "gone-4"), Target("ok", "channels", "ok-4")]
    report = await ConnectionManager().broadcast(targets, FRAME)
    assert (report.delivered, report.gone) == (1, ["g"])
    assert [s[0] for s in recording.sent] == ["ok-4"]


# --- the shared manager over real sockets and API Gateway records ---------------------------


def save_apigw(cid: str, address: str, user: str = "alice", tenant: str = "acme") -> ConnectionInfo:
    return connection_store.save(
        ConnectionInfo(
            connection_id=cid, tenant_id=tenant, user_id=user, transport="apigw", address=address
        )
    )


@pytest.mark.usefixtures("asgi_settings")
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


async def test_send_to_one_apigw_connection(live, recording_apigw) -> None:
    save_apigw("c1", "addr-1")
    assert await manager.send("c1", frames.pong())
    assert recording_apigw.sent[0][0] == "addr-1"
    assert not await manager.send("missing", frames.pong())
    record = ConnectionInfo("c9", "acme", "alice", "apigw", "addr-9")
    assert await manager.send("c9", frames.pong(), record=record)
    assert recording_apigw.sent[-1][0] == "addr-9"


async def test_broadcast_outcomes_over_apigw(live, recording_apigw) -> None:
    save_apigw("ok", "addr-ok")
    save_apigw("dead", "gone")
    subscription_store.subscribe("acme#alice#r", "dead", "apigw", "gone")
    save_apigw("sick", "fail")
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
    assert {text for _, _, text in recording_apigw.sent} == {recording_apigw.sent[0][2]}


async def test_send_to_request_adds_origin_once(live, recording_apigw) -> None:
    subscription_store.subscribe("acme#alice#r", "s1", "apigw", "addr-s1")
    origin = Target("o1", "apigw", "addr-o1")
    report = await manager.send_to_request("acme#alice#r", frames.pong(), origin=origin)
    assert report.delivered == 2
    assert sorted(s[0] for s in recording_apigw.sent) == ["addr-o1", "addr-s1"]
    recording_apigw.sent.clear()
    same = Target("s1", "apigw", "addr-s1")
    report = await manager.send_to_request("acme#alice#r", frames.pong(), origin=same)
    assert report.delivered == 1


async def test_subscribers_cached_until_the_clock_passes(live, monkeypatch) -> None:
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


async def test_subscriber_cache_keeps_only_live_entries(live) -> None:
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
        ("fail", True, False, True),
        ("addr-1", False, False, False),
    ],
)
async def test_disconnect_apigw(
    live, recording_apigw, address, registered, expected, remains
) -> None:
    if registered:
        save_apigw("c1", address)
    assert await manager.disconnect("c1", 4000, "bye") is expected
    if expected and remains:
        assert recording_apigw.closed == [(address, 4000, "bye")]
    try:
        connection_store.get("c1")
        present = True
    except NotFound:
        present = False
    assert present is remains
