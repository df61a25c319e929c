"""Redis mode, the scaled-out shape: two ``serve --no-worker`` processes sharing Redis as
the channel layer, two ``process_requests`` workers, dynalite behind them all."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest

from bench.stack import Environment, Stack, http_get, running_stack
from bench.wsclient import check_request_stream, p50_ms

pytestmark = pytest.mark.e2e

QUICK = {"duration_s": 0, "steps": 1, "max_requests": 0, "include_connections": False}


@pytest.fixture(scope="module")
def stack(e2e: Environment) -> Iterator[Stack]:
    with running_stack(
        e2e,
        "redis",
        redis=True,
        servers=2,
        server_worker=False,
        workers=2,
        worker_args=("--concurrency", "4", "--poll-interval", "0.2"),
        # One user sends 50 requests at once below: above the default quota of 20.
        env={"STREAMER_MAX_ACTIVE_REQUESTS_PER_USER": "100"},
    ) as running:
        yield running


async def test_servers_run_without_a_worker(stack: Stack) -> None:
    for server in stack.servers:
        server.proc.wait_for_output("serving on")
        assert "without in-process worker" in server.proc.output()
        status, _, body = await asyncio.to_thread(http_get, f"{server.url}/healthz")
        assert status == 200, body
        assert '"channel_layer": "ok"' in body or '"channel_layer":"ok"' in body


async def test_fifty_requests_run_exactly_once(stack: Stack, measurements: dict[str, str]) -> None:
    user, sockets, per_socket = "bulk", 5, 10
    ids = [[f"bulk-{s}-{i}" for i in range(per_socket)] for s in range(sockets)]
    async with contextlib.AsyncExitStack() as exits:
        opened = [
            await exits.enter_async_context(stack.client(user, server=s % len(stack.servers)))
            for s in range(sockets)
        ]
        started = time.perf_counter()
        sent_at: dict[str, float] = {}

        async def fire(client, request_ids: list[str]) -> None:
            for request_id in request_ids:
                sent_at[request_id] = await client.send(
                    {"action": "generate_report", "id": request_id, "payload": QUICK}
                )

        await asyncio.gather(*(fire(c, r) for c, r in zip(opened, ids, strict=True)))
        for client, request_ids in zip(opened, ids, strict=True):
            for request_id in request_ids:
                await client.terminal(request_id, within=30)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(1.0)  # a duplicate run would deliver a second terminal frame now

        completes = []
        for client, request_ids in zip(opened, ids, strict=True):
            for request_id in request_ids:
                frames = client.about(request_id)
                done = check_request_stream(frames)
                completes.append(done["_rx"] - sent_at[request_id])
            # Frames about one socket's requests never reach another socket.
            others = {r for other in ids if other is not request_ids for r in other}
            assert not [f for f in client.frames if f.get("request_id") in others]
        measurements["redis mode: 50 requests, 5 sockets, 2 servers, 2 workers"] = (
            f"all complete in {elapsed * 1000:.0f} ms; complete p50 {p50_ms(completes):.0f} ms"
        )

        listed = await opened[0].call("request.list", {"limit": 100})
        records = listed["data"]["requests"]
        assert sorted(r["request_id"] for r in records) == sorted(r for row in ids for r in row)
        assert {r["status"] for r in records} == {"COMPLETED"}
        assert listed["data"]["cursor"] is None
        created = [r["created_at"] for r in records]
        assert created == sorted(created, reverse=True), "newest first"

        stored = await stack.read_records([r for row in ids for r in row], user)
        assert [s.attempts for s in stored] == [1] * 50, [
            (s.request_id, s.attempts) for s in stored
        ]
        assert {str(s.status) for s in stored} == {"COMPLETED"}


async def test_resume_on_another_server(stack: Stack) -> None:
    async with stack.client("roamer", server=0) as first:
        await first.submit("roam-1", {"duration_s": 3, "steps": 30})
        await first.wait_for(
            lambda f: (
                f.get("request_id") == "roam-1" and f["type"] == "progress" and f["percentage"] > 0
            ),
            what="first progress",
        )
    async with stack.client("roamer", server=1) as second:
        answer = await second.call("request.status", {"request_id": "roam-1", "subscribe": True})
        record = answer["data"]
        assert record["request_id"] == "roam-1", answer
        if record["status"] == "COMPLETED":
            assert "result" in record
            await asyncio.sleep(1.0)
            assert second.about("roam-1") == []
            return
        assert record["status"] in ("PENDING", "PROCESSING", "RETRYING"), record
        done = await second.terminal("roam-1", within=20)
        await asyncio.sleep(0.5)
        check_request_stream(second.about("roam-1"), expect_ack=False)
        progress = [f for f in second.about("roam-1") if f["type"] == "progress"]
        assert progress, "progress frames reach a subscriber on another server"
        assert done["result"]["steps"] == 30
    stored = await stack.read_record("roam-1", "roamer")
    assert stored.attempts == 1


async def test_cancel_from_another_server(stack: Stack) -> None:
    """The sender on server 0 gets the CANCELLED error when the same user cancels from
    server 1; the worker process holding the request stops it (no complete)."""
    async with (
        stack.client("stopper", server=0) as sender,
        stack.client("stopper", server=1) as other,
    ):
        await sender.submit("stop-1", {"duration_s": 5, "steps": 50})
        await sender.wait_for(
            lambda f: (
                f.get("request_id") == "stop-1" and f["type"] == "progress" and f["percentage"] > 0
            ),
            what="first progress",
        )
        answer = await other.call("request.cancel", {"request_id": "stop-1"})
        assert answer["data"]["status"] == "CANCELLED", answer
        terminal = await sender.terminal("stop-1", within=5)
        assert terminal["error"]["code"] == "CANCELLED"
        await asyncio.sleep(1.5)
        check_request_stream(sender.about("stop-1"), terminal="error")
    stored = await stack.read_record("stop-1", "stopper")
    assert str(stored.status) == "CANCELLED"
    assert stored.percentage < 100


async def test_isolation_across_servers(stack: Stack) -> None:
    async with stack.client("owner", server=0) as owner:
        await owner.submit("mine-1", QUICK)
        assert (await owner.terminal("mine-1"))["type"] == "complete"
    for user, tenant in (("intruder", "demo"), ("owner", "other")):
        async with stack.client(user, tenant, server=1) as intruder:
            for action in ("request.status", "request.cancel"):
                answer = await intruder.call(action, {"request_id": "mine-1"})
                assert answer["type"] == "error", answer
                assert answer["error"]["code"] == "NOT_FOUND"
    async with stack.client("owner", server=1) as owner:
        record = (await owner.call("request.status", {"request_id": "mine-1"}))["data"]
        assert record["status"] == "COMPLETED"


async def test_socket_idle_past_the_redis_read_timeout_still_works(stack: Stack) -> None:
    """redis-py 8 reads with a 5 s socket timeout by default while channels_redis blocks
    for 5 s on BZPOPMIN; an idle socket must survive that and still get its frames."""
    async with stack.client("idler", server=0) as idle, stack.client("idler", server=1) as other:
        await asyncio.sleep(6.5)
        assert not idle.closed, f"closed with {idle.close_code}"
        await idle.submit("idle-1", QUICK, within=10)
        assert (await idle.terminal("idle-1", within=10))["type"] == "complete"
        # A frame pushed from the other server's process reaches it too.
        await other.call("request.status", {"request_id": "idle-1"})
        answer = await idle.call("echo", {"after": "idle"})
        assert answer["data"] == {"echo": {"after": "idle"}}


async def test_a_watcher_on_one_server_follows_requests_started_on_the_other(
    stack: Stack,
) -> None:
    """request.watch across processes: the watcher's socket is on server 0; the request
    is sent to server 1 and run by a separate worker; frames travel through Redis."""
    async with (
        stack.client("watch-user", server=0) as watcher,
        stack.client("watch-user", server=1) as tab,
        stack.client("watch-other", server=0) as stranger,
    ):
        for client in (watcher, stranger):
            await client.send({"action": "request.watch", "id": "w"})
            reply = await client.wait_for(lambda f: f.get("request_id") == "w")
            assert reply["data"] == {"watching": True, "requests": []}
        payload = {"duration_s": 0.6, "steps": 6, "max_requests": 0, "include_connections": False}
        for request_id in ("x1", "x2"):
            await tab.send({"action": "generate_report", "id": request_id, "payload": payload})
        for request_id in ("x1", "x2"):
            for client in (watcher, tab):
                await client.wait_for(
                    lambda f, r=request_id: f.get("request_id") == r and f["type"] == "complete",
                    within=30,
                    what=f"{request_id} complete",
                )
            seen = [f for f in watcher.frames if f.get("request_id") == request_id]
            assert seen[0]["action"] == "generate_report"
            check_request_stream(seen)
            started = [f for f in tab.frames if f.get("request_id") == request_id]
            assert "action" not in started[0]
            assert check_request_stream(seen)["result"] == check_request_stream(started)["result"]
        assert [f for f in stranger.frames if f.get("request_id") in ("x1", "x2")] == []
