"""The per-process fan-out hub (``connections/hub.py``): which groups a process joins and
leaves, refresh and retry of memberships, delivery through real consumers (exactly
once, in each publisher's order, never to another tenant), and two hubs on one shared
layer standing for two server processes (the same with Redis and real processes:
``tests/e2e/test_hub_redis.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer

from connections import hub as hub_module
from connections.hub import (
    HUB_MESSAGE,
    Hub,
    Member,
    Registry,
    audience_of,
    group_name,
    hub,
)
from connections.layers import ProcessChannelLayer
from connections.manager import manager
from connections.transports.channels import frame_message
from protocol import codec
from protocol.frames import now_ms
from storage.errors import StoreError
from tests.support.sockets import Client, connected, make_token

WAIT_S = 10.0


class Inbox:
    """A socket's frame path that records what reached it (for hub-level tests)."""

    def __init__(self, connection_id: str, tenant: str = "acme", user: str = "alice") -> None:
        self.member = Member(connection_id, tenant, user, self.deliver)
        self.texts: list[str] = []
        self.arrived = asyncio.Event()

    async def deliver(self, message: dict[str, Any]) -> bool:
        self.texts.append(message["text"])
        self.arrived.set()
        return True

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [codec.loads(t) for t in self.texts]

    async def until(self, count: int) -> None:
        while len(self.texts) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), WAIT_S)


async def eventually(check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds: something a background task does."""
    for _ in range(int(WAIT_S / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the hub's background task never did it")


def frame(p: int, n: int) -> dict[str, Any]:
    """Frame ``n`` of publisher ``p``."""
    return {"type": "notice", "timestamp": now_ms(), "p": p, "n": n}


def message(n: int) -> dict[str, Any]:
    """Frame ``n`` as the transport's channel message (what the hub carries)."""
    return frame_message(frame(0, n), codec.dumps_text(frame(0, n)))


def members_of(layer: InMemoryChannelLayer, audience: tuple[str, ...]) -> set[str]:
    return set(layer.groups.get(group_name(audience), {}))


@pytest.fixture
def layer() -> Any:
    """A fresh shared in-memory layer as the default (every hub in the test uses it)."""
    fresh = InMemoryChannelLayer(capacity=100, expiry=60, group_expiry=86400)
    previous = channel_layers.set("default", fresh)
    yield fresh
    if previous is None:
        channel_layers.backends.pop("default", None)
    else:
        channel_layers.set("default", previous)


@contextlib.asynccontextmanager
async def process(alias: str = "default") -> Any:
    """A hub standing for one more server process on the shared layer."""
    other = Hub(alias)
    try:
        yield other
    finally:
        other.reset()


# --- the registry ----------------------------------------------------------------------------

T, U_ALICE, U_BOB = audience_of("acme"), audience_of("acme", "alice"), audience_of("acme", "bob")
G = audience_of("globex")


@pytest.mark.parametrize(
    ("steps", "changes", "left_with"),
    [
        ([("+", "c1", "alice")], [[T, U_ALICE]], [T, U_ALICE]),
        ([("+", "c1", "alice"), ("+", "c2", "alice")], [[T, U_ALICE], []], [T, U_ALICE]),
        ([("+", "c1", "alice"), ("+", "c2", "bob")], [[T, U_ALICE], [U_BOB]], [T, U_ALICE, U_BOB]),
        ([("+", "c1", "alice"), ("-", "c1", "")], [[T, U_ALICE], [T, U_ALICE]], []),
        (
            [("+", "c1", "alice"), ("+", "c2", "bob"), ("-", "c1", "")],
            [[T, U_ALICE], [U_BOB], [U_ALICE]],
            [T, U_BOB],
        ),
        ([("-", "nobody", "")], [[]], []),  # an unknown socket leaves nothing
        (
            [("+", "c1", "alice"), ("-", "c1", ""), ("-", "c1", "")],
            [[T, U_ALICE], [T, U_ALICE], []],
            [],
        ),
        # the same connection again (re-registered as another user): moves, no duplicate
        ([("+", "c1", "alice"), ("+", "c1", "bob")], [[T, U_ALICE], [T, U_BOB]], [T, U_BOB]),
    ],
)
def test_registry_says_which_groups_to_join_and_leave(
    steps: list[tuple[str, str, str]], changes: list[list[tuple[str, ...]]], left_with: list
) -> None:
    registry = Registry()
    seen = []
    for op, cid, user in steps:
        if op == "+":
            seen.append(registry.add(Member(cid, "acme", user, Inbox(cid).deliver)))
        else:
            seen.append(registry.remove(cid))
    assert seen == changes
    assert sorted(registry.audiences()) == sorted(left_with)


def test_group_names_are_valid_short_and_distinct() -> None:
    layer = InMemoryChannelLayer()
    names = {
        group_name(a)
        for a in [
            audience_of("acme"),
            audience_of("acme", "alice"),
            audience_of("acme", "alice@example.com/ü"),  # any user id
            audience_of("acme\0x"),
            audience_of("globex"),
        ]
    }
    assert len(names) == 5
    assert all(layer.require_valid_group_name(n) and len(n) < 100 for n in names)


# --- memberships on the layer ------------------------------------------------------------------


async def test_first_socket_joins_and_last_socket_leaves(layer: InMemoryChannelLayer) -> None:
    a1, a2, b1 = Inbox("a1"), Inbox("a2"), Inbox("b1", user="bob")
    await hub.register(a1.member)
    channel = hub.channel()
    assert channel is not None
    assert channel in members_of(layer, T) and channel in members_of(layer, U_ALICE)
    await hub.register(a2.member)
    await hub.register(b1.member)
    await hub.unregister("a1")
    assert channel in members_of(layer, U_ALICE)  # a2 is still here
    await hub.unregister("a2")
    assert channel not in members_of(layer, U_ALICE)
    assert channel in members_of(layer, T) and channel in members_of(layer, U_BOB)
    await hub.unregister("b1")
    assert channel not in members_of(layer, T) and channel not in members_of(layer, U_BOB)


async def test_memberships_are_refreshed_before_the_layer_forgets_them(
    layer: InMemoryChannelLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer.group_expiry = 2  # refreshed every 0.5 s (REFRESH_SHARE)
    await hub.register(Inbox("a1").member)
    channel = hub.channel()
    joined_at = layer.groups[group_name(T)][channel]
    await eventually(lambda: layer.groups[group_name(T)][channel] != joined_at)
    # and a membership the layer lost (expired, flushed) comes back with the next pass
    layer.groups.pop(group_name(U_ALICE))
    await eventually(lambda: channel in members_of(layer, U_ALICE))


class FlakyLayer(InMemoryChannelLayer):
    """An in-memory layer whose group operations fail while ``down`` (Redis down)."""

    down = False

    async def group_add(self, group: str, channel: str) -> None:
        if self.down:
            raise ConnectionError("layer down")
        await super().group_add(group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        if self.down:
            raise ConnectionError("layer down")
        await super().group_send(group, message)


async def test_a_failed_join_is_retried_and_local_delivery_goes_on() -> None:
    flaky = FlakyLayer()
    flaky.down = True
    channel_layers.set("default", flaky)
    try:
        inbox = Inbox("a1")
        await hub.register(inbox.member)
        assert members_of(flaky, T) == set()
        report = await hub.send("acme", None, message(1))
        assert (report.delivered, report.relayed) == (1, False)  # not relayed: layer down
        flaky.down = False
        await eventually(lambda: hub.channel() in members_of(flaky, T))  # the retry joins
        assert [f["n"] for f in inbox.frames] == [1]
    finally:
        channel_layers.backends.pop("default", None)


# --- delivery in one process -------------------------------------------------------------------


@pytest.mark.usefixtures("asgi_settings")
async def test_concurrent_publishers_reach_every_socket_once_in_their_order(live) -> None:
    publishers, frames_each = 4, 30
    users = ["alice", "bob", "carol"]
    async with contextlib.AsyncExitStack() as stack:
        sockets: list[tuple[str, Client]] = []
        for i in range(9):
            user = users[i % len(users)]
            sockets.append((user, await stack.enter_async_context(connected(make_token(user)))))
        outsider = await stack.enter_async_context(connected(make_token("alice", "globex")))

        async def publish(p: int) -> None:
            for n in range(frames_each):
                if n % 3 == 2:  # one frame in three to one user only
                    await manager.send_to_user("acme", users[p % 3], frame(p, n))
                else:
                    report = await manager.send_to_tenant("acme", frame(p, n))
                    assert report.delivered == len(sockets)

        await asyncio.gather(*(publish(p) for p in range(publishers)))

        for user, client in sockets:
            expected = {
                (p, n)
                for p in range(publishers)
                for n in range(frames_each)
                if n % 3 != 2 or users[p % 3] == user
            }
            got = [await client.recv() for _ in range(len(expected))]
            pairs = [(f["p"], f["n"]) for f in got]
            assert sorted(pairs) == sorted(expected), "each frame exactly once"
            for p in range(publishers):
                mine = [n for q, n in pairs if q == p]
                assert mine == sorted(mine), f"publisher {p} out of order on {user}"
            assert await client.silent(0.05)
        assert await outsider.silent(0.05), "another tenant's socket got a frame"


@pytest.mark.usefixtures("asgi_settings")
async def test_a_closed_socket_gets_nothing_and_is_not_counted(live) -> None:
    async with connected(make_token("alice")) as stays:
        async with connected(make_token("alice")):
            assert (await manager.send_to_user("acme", "alice", frame(0, 1))).delivered == 2
        assert (await stays.recv())["n"] == 1
        report = await manager.send_to_user("acme", "alice", frame(0, 2))
        assert report.delivered == 1
        assert (await stays.recv())["n"] == 2
    assert len(hub.registry) == 0


async def test_a_failing_socket_does_not_stop_the_fan_out(layer: InMemoryChannelLayer) -> None:
    async def broken(message: dict[str, Any]) -> bool:
        raise RuntimeError("socket gone under the send")

    good = [Inbox(f"g{i}") for i in range(3)]
    await hub.register(good[0].member)
    await hub.register(Member("bad", "acme", "alice", broken))
    for inbox in good[1:]:
        await hub.register(inbox.member)
    report = await hub.send("acme", None, message(1))
    assert report.delivered == 3
    assert all(len(inbox.texts) == 1 for inbox in good)


@pytest.mark.parametrize(
    ("backend", "relayed"),
    [(InMemoryChannelLayer, True), (ProcessChannelLayer, False), (None, False)],
)
async def test_only_a_shared_layer_relays(
    settings: Any, backend: type | None, relayed: bool
) -> None:
    if backend is None:  # no channel layer configured at all: local delivery only
        settings.CHANNEL_LAYERS = {}
        channel_layers.backends = {}
    else:
        channel_layers.set("default", backend())
    try:
        inbox = Inbox("a1")
        await hub.register(inbox.member)
        report = await hub.send("acme", None, message(1))
        assert (report.delivered, report.relayed) == (1, relayed)
        await hub.refresh()
        await hub.unregister("a1")
        assert (await hub.send("acme", None, message(2))).delivered == 0
        assert [f["n"] for f in inbox.frames] == [1]
    finally:
        channel_layers.backends.pop("default", None)


# --- two processes on one shared layer ---------------------------------------------------------


async def test_a_frame_reaches_each_process_once_and_only_its_tenant(
    layer: InMemoryChannelLayer,
) -> None:
    here = [Inbox("h1"), Inbox("h2", user="bob")]
    there = [Inbox("t1"), Inbox("t2", user="bob")]
    there_other_tenant = Inbox("x1", tenant="globex")
    async with process() as other:
        for inbox in here:
            await hub.register(inbox.member)
        for inbox in [*there, there_other_tenant]:
            await other.register(inbox.member)
        for n in range(20):
            report = await hub.send("acme", None, message(n))
            assert (report.delivered, report.relayed) == (2, True)
        await hub.send("acme", "bob", message(99))
        for inbox in there:
            await inbox.until(20)
        await there[1].until(21)
        # a last frame behind the others on the one channel: a duplicate would precede it
        await hub.send("acme", None, message(100))
        for inbox in there:
            await inbox.until(21 + (inbox.member.user_id == "bob"))
        for inbox in [*here, *there]:
            ns = [f["n"] for f in inbox.frames]
            want = [*range(20), *([99] if inbox.member.user_id == "bob" else []), 100]
            assert ns == want
        assert there_other_tenant.texts == []


async def test_a_reader_counts_frames_that_never_arrived(layer: InMemoryChannelLayer) -> None:
    inbox = Inbox("a1")
    await hub.register(inbox.member)
    channel = hub.channel()
    assert channel is not None
    lost_before = hub_module.LOST._value.get()
    for seq in (1, 2, 5):  # 3 and 4 were dropped by a full channel
        envelope = {
            "type": HUB_MESSAGE,
            "origin": "elsewhere",
            "seq": seq,
            "audience": list(T),
            "frame": message(seq),
        }
        await get_channel_layer().send(channel, envelope)
    await inbox.until(3)
    assert [f["n"] for f in inbox.frames] == [1, 2, 5]
    assert hub_module.LOST._value.get() - lost_before == 2


async def test_each_process_has_its_own_channel(layer: InMemoryChannelLayer) -> None:
    async with process() as other:
        await hub.register(Inbox(uuid.uuid4().hex).member)
        await other.register(Inbox(uuid.uuid4().hex).member)
        assert hub.channel() != other.channel()
        assert members_of(layer, T) == {hub.channel(), other.channel()}


@pytest.mark.parametrize(
    "bad",
    [
        {"type": HUB_MESSAGE},
        {"type": HUB_MESSAGE, "origin": "elsewhere", "seq": "x", "audience": ["t", "acme"]},
        {"type": HUB_MESSAGE, "origin": "elsewhere", "seq": 1, "audience": ["t", "acme"]},
    ],
)
async def test_a_malformed_message_does_not_stop_the_reader(
    layer: InMemoryChannelLayer, bad: dict[str, Any]
) -> None:
    inbox = Inbox("a1")
    await hub.register(inbox.member)
    channel = hub.channel()
    assert channel is not None
    good = {"type": HUB_MESSAGE, "origin": "o2", "seq": 1, "audience": list(T), "frame": message(7)}
    await get_channel_layer().send(channel, bad)
    await get_channel_layer().send(channel, good)
    await inbox.until(1)
    assert [f["n"] for f in inbox.frames] == [7]


@pytest.mark.parametrize(
    ("configured", "reads_storage"),
    [(("channels",), False), (("channels", "apigw"), True)],
)
async def test_storage_is_read_only_for_transports_outside_the_hub(
    layer: InMemoryChannelLayer,
    settings: Any,
    unreachable_storage: Callable[[], None],
    configured: tuple[str, ...],
    reads_storage: bool,
) -> None:
    """Storage is down: a fan-out that never reads it still delivers; one that must
    (API Gateway configured) fails after the hub delivered to this process's sockets."""
    settings.STREAMER_TRANSPORTS = {
        name: config for name, config in settings.STREAMER_TRANSPORTS.items() if name in configured
    }
    unreachable_storage()
    inbox = Inbox("a1")
    await hub.register(inbox.member)
    if reads_storage:
        with pytest.raises(StoreError):
            await manager.send_to_tenant("acme", frame(0, 1))
    else:
        report = await manager.send_to_tenant("acme", frame(0, 1))
        assert (report.delivered, report.relayed) == (1, True)
    assert [f["n"] for f in inbox.frames] == [1]
