"""``request.watch`` over the real consumer (moto): a watching connection receives every
request of its user, however started, each beginning with an acknowledgment that
carries ``action``; nobody else's; once per connection."""

from __future__ import annotations

import asyncio

import pytest

from connections.manager import manager
from protocol import frames
from storage.requests import RequestKey, request_store
from storage.subscription import subscription_store
from streaming import requests_api
from streaming.lifecycle import origin_of
from streaming.session import DeliveryGuard
from streaming.watchers import announce_request, watch_key
from tests.support.sockets import connected, make_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("asgi_settings")]

ALICE = make_token("alice")
BOB = make_token("bob")
QUICK = {"duration_s": 0, "steps": 1, "max_requests": 0, "include_connections": False}


def key(request_id: str, user: str = "alice") -> RequestKey:
    return RequestKey("acme", user, request_id)


async def finish(request_id: str, user: str = "alice") -> None:
    """What the worker sends for a request: progress, then the terminal frame, to its
    origin and its subscribers."""
    record = await asyncio.to_thread(request_store.get, key(request_id, user))
    origin = origin_of(record)
    request_key = record.key.as_string()
    await manager.send_to_request(
        request_key, frames.progress(request_id, 50, "half"), origin=origin
    )
    await manager.send_to_request(
        request_key, frames.complete(request_id, {"ok": True}), origin=origin, fresh=True
    )


async def test_a_watcher_follows_a_request_started_in_another_tab(live) -> None:
    async with (
        connected(ALICE) as tab,
        connected(ALICE) as watcher,
        connected(ALICE) as other_tab,
        connected(BOB) as bob,
    ):
        assert await watcher.data("request.watch", {}) == {"watching": True, "requests": []}
        await bob.data("request.watch", {"enabled": True})
        ack = await tab.request("generate_report", QUICK, id="w1")
        assert ack["type"] == "acknowledgment" and "action" not in ack
        announced = await watcher.recv()
        assert (announced["type"], announced["request_id"], announced["action"]) == (
            "acknowledgment",
            "w1",
            "generate_report",
        )
        assert announced["status"] == "queued"
        await finish("w1")
        progress, done = await watcher.recv(), await watcher.recv()
        assert (progress["type"], progress["percentage"]) == ("progress", 50)
        assert (done["type"], done["result"]) == ("complete", {"ok": True})
        assert await bob.silent(0.1), "another user's requests never reach bob"
        assert await other_tab.silent(0.05), "a connection that does not watch gets nothing"


async def test_a_request_started_from_python_reaches_the_watcher(live) -> None:
    async with connected(ALICE) as watcher:
        await watcher.data("request.watch")
        record = await requests_api.astart(
            "acme", "alice", "generate_report", QUICK, request_id="srv1"
        )
        assert record["status"] == "PENDING"
        assert (await watcher.recv())["action"] == "generate_report"
        await finish("srv1")
        assert [(await watcher.recv())["type"] for _ in range(2)] == ["progress", "complete"]


async def test_watching_starts_with_the_users_running_requests(live) -> None:
    async with connected(ALICE) as tab, connected(ALICE) as watcher:
        for request_id in ("old", "live1", "live2"):
            await tab.request("generate_report", QUICK, id=request_id)
        await asyncio.to_thread(request_store.cancel, key("old"))
        data = await watcher.data("request.watch")
        assert data == {"watching": True, "requests": ["live1", "live2"]}
        announced = [await watcher.recv(), await watcher.recv()]
        assert [(f["request_id"], f["action"]) for f in announced] == [
            ("live1", "generate_report"),
            ("live2", "generate_report"),
        ]
        # Announced twice (watch listing + a racing enqueue): the socket sees it once.
        record = await asyncio.to_thread(request_store.get, key("live1"))
        await announce_request(record)
        assert await watcher.silent(0.1)
        await finish("live1")
        assert (await watcher.recv())["type"] == "progress"


async def test_the_starting_connection_gets_each_frame_once_even_when_watching(live) -> None:
    async with connected(ALICE) as tab:
        await tab.data("request.watch")
        ack = await tab.request("generate_report", QUICK, id="own")
        assert ack["type"] == "acknowledgment" and "action" not in ack
        await finish("own")
        assert [(await tab.recv())["type"] for _ in range(2)] == ["progress", "complete"]
        assert await tab.silent(0.1)


async def test_unwatching_and_disconnecting_stop_the_frames(live) -> None:
    watchers = watch_key("acme", "alice")
    async with connected(ALICE) as tab:
        await tab.request("generate_report", QUICK, id="kept")
        await tab.request("generate_report", QUICK, id="watched")
        async with connected(ALICE) as watcher:
            await watcher.data("request.status", {"request_id": "kept"})
            assert (await watcher.data("request.watch"))["requests"] == ["kept", "watched"]
            await watcher.recv(), await watcher.recv()
            (conn,) = [s.connection_id for s in subscription_store.list_by_request(watchers)]
            assert await watcher.data("request.watch", {"enabled": False}) == {
                "watching": False,
                "requests": [],
            }
            assert subscription_store.list_by_request(watchers) == []
            # What the client subscribed to itself stays; what watching added goes.
            left = {s.request_key for s in subscription_store.list_by_connection(conn)}
            assert left == {key("kept").as_string()}
            await tab.request("generate_report", QUICK, id="after")
            await finish("after")
            await finish("watched")
            assert await watcher.silent(0.1)
            await watcher.data("request.watch")
            async with connected(ALICE) as tab2:  # tab's own socket is busy with frames
                ack = await tab2.request("generate_report", QUICK, id="later")
                assert ack["type"] == "acknowledgment"
            announced = {(await watcher.recv())["request_id"] for _ in range(2)}
            assert announced == {"after", "later"}
        # The socket closed: every subscription watching made goes with it, even the
        # one another connection's request added (the close finishes in the background).
        for _ in range(100):
            if not subscription_store.list_by_connection(conn):
                break
            await asyncio.sleep(0.05)
        assert subscription_store.list_by_connection(conn) == []


@pytest.mark.parametrize("payload", [{"enabled": "yes"}, {"enabled": None}, [1]])
async def test_watch_payload_validation(live, payload) -> None:
    async with connected(ALICE) as client:
        reply = await client.request("request.watch", payload)
        assert reply["type"] == "error"
        assert reply["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    ("frames_in", "allowed"),
    [
        ([("acknowledgment", None), ("acknowledgment", None)], [True, False]),
        (
            [("acknowledgment", None), ("progress", 10), ("acknowledgment", None)],
            [True, True, False],
        ),
        ([("progress", 10), ("acknowledgment", None)], [True, False]),
        (
            [("acknowledgment", None), ("complete", None), ("acknowledgment", None)],
            [True, True, False],
        ),
    ],
)
def test_the_guard_lets_one_acknowledgment_through(frames_in, allowed) -> None:
    guard = DeliveryGuard()
    assert [guard.allow(kind, "r1", pct) for kind, pct in frames_in] == allowed
