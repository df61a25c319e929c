"""Redis (the Channels layer of the scaled-out shape) killed with SIGKILL and started
again on the same port while requests run: sockets stay up or the clients reconnect,
every request still completes, and resuming shows it.

Redis holds no durable state here (requests live in DynamoDB), so it comes back empty:
the worker group and any frame in flight are gone, which is the worst case.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus

from bench.stack import Environment, Stack, running_stack
from bench.wsclient import WSClient, check_request_stream, open_client

pytestmark = pytest.mark.e2e

ENV = {"STREAMER_LEASE_S": "3", "STREAMER_POLL_INTERVAL_S": "0.2"}
QUICK = {"duration_s": 0, "steps": 1, "max_requests": 0, "include_connections": False}
# Per user: one request that ends while Redis is away (its terminal frame cannot be
# delivered), two that end after it is back.
DURATIONS = (2, 4, 6)
USERS = 4
PER_USER = len(DURATIONS)
SETTLE_S = 1.0


@pytest.fixture(scope="module")
def stack(e2e: Environment) -> Iterator[Stack]:
    with running_stack(
        e2e,
        "redisdown",
        redis=True,
        servers=2,
        server_worker=False,
        workers=2,
        worker_args=("--concurrency", "8"),
        env=ENV,
    ) as running:
        yield running


async def reconnect(
    stack: Stack, user: str, server: int, exits: contextlib.AsyncExitStack
) -> WSClient:
    """Connect again, retrying while the server refuses (bounded)."""
    url = stack.servers[server].ws_url(stack.token(user))
    deadline = time.monotonic() + 30
    while True:
        try:
            client = await exits.enter_async_context(open_client(url))
            answer = await client.call("echo", {"ping": 1}, within=5)
            if answer["type"] == "response":
                return client
        except (OSError, InvalidStatus, AssertionError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{user} could not reconnect within 30 s")
        await asyncio.sleep(0.5)


def terminal_seen(client: WSClient, request_id: str) -> bool:
    return any(f["type"] in ("complete", "error") for f in client.about(request_id))


async def test_redis_killed_and_restarted(stack: Stack, figures: dict[str, str]) -> None:
    assert stack.redis is not None and stack.redis_url is not None
    port = int(stack.redis_url.rsplit(":", 1)[1].split("/")[0])
    users = [f"u{i}" for i in range(USERS)]
    ids = {u: [f"{u}-r{j}" for j in range(PER_USER)] for u in users}
    async with contextlib.AsyncExitStack() as exits:
        first = {
            u: await exits.enter_async_context(stack.client(u, server=i % 2))
            for i, u in enumerate(users)
        }
        for u in users:
            for request_id, duration in zip(ids[u], DURATIONS, strict=True):
                payload = {**QUICK, "duration_s": duration, "steps": 10 * duration}
                ack = await first[u].submit(request_id, payload)
                assert ack["type"] == "acknowledgment", ack
        for u in users:
            for request_id in ids[u]:
                await first[u].wait_for(
                    lambda f, r=request_id: f.get("request_id") == r and f["type"] == "progress",
                    what=f"progress of {request_id}",
                )

        stack.redis.kill9()
        killed_at = time.monotonic()
        # Redis stays away until the shortest requests have ended (in storage): their
        # terminal frames had nowhere to go.
        ended_in_outage = [ids[u][0] for u in users]
        deadline = killed_at + 30
        while True:
            stored = [await stack.read_record(ids[u][0], u) for u in users]
            if all(str(s.status) == "COMPLETED" for s in stored):
                break
            assert time.monotonic() < deadline, [(s.request_id, str(s.status)) for s in stored]
            await asyncio.sleep(0.2)
        stack.start_redis(port=port)
        outage_s = time.monotonic() - killed_at

        # Every client checks its requests: a socket the outage closed reconnects; a
        # terminal frame lost while Redis was away is why a client asks at all.
        current: dict[str, WSClient] = {}
        reconnected = 0
        resumed: dict[str, list[str]] = {}
        for i, u in enumerate(users):
            client = first[u]
            while True:
                if client.closed:  # the outage may close a socket at any moment until now
                    client = await reconnect(stack, u, i % 2, exits)
                    reconnected += 1
                current[u] = client
                resumed[u] = []
                try:
                    for request_id in ids[u]:
                        if client is first[u] and terminal_seen(client, request_id):
                            continue
                        answer = await client.call(
                            "request.status", {"request_id": request_id}, within=15
                        )
                        assert answer["type"] == "response", answer
                        if answer["data"]["status"] == "COMPLETED":
                            assert answer["data"]["result"]["steps"] > 0, answer
                        else:
                            resumed[u].append(request_id)
                except AssertionError:
                    if not client.closed:
                        raise
                    continue  # closed while asking: reconnect and ask again
                break

        for u in users:
            for request_id in resumed[u]:
                done = await current[u].terminal(request_id, within=45)
                assert done["type"] == "complete", done
        await asyncio.sleep(SETTLE_S)

        for u in users:
            for client in {id(first[u]): first[u], id(current[u]): current[u]}.values():
                for request_id in ids[u]:
                    frames = client.about(request_id)
                    terminals = [f for f in frames if f["type"] in ("complete", "error")]
                    assert len(terminals) <= 1, frames
                    progress = [f["percentage"] for f in frames if f["type"] == "progress"]
                    assert progress == sorted(progress), progress
            for request_id in resumed[u]:
                frames = current[u].about(request_id)
                terminals = [f for f in frames if f["type"] in ("complete", "error")]
                assert len(terminals) == 1, frames

        # After the outage the whole path works again: a new request, woken through
        # Redis, runs and its frames come back through Redis.
        probe = current[users[0]]
        await probe.submit("after-outage", QUICK)
        assert (await probe.terminal("after-outage", within=20))["type"] == "complete"
        check_request_stream(probe.about("after-outage"))

    all_ids = [r for u in users for r in ids[u]]
    statuses = []
    for u in users:
        statuses += [str(s.status) for s in await stack.read_records(ids[u], u)]
    assert statuses == ["COMPLETED"] * len(all_ids), statuses
    for server in stack.servers:
        assert server.proc.alive, server.proc.tail()
    for worker in stack.workers:
        assert worker.alive, worker.tail()
        # A terminal frame that could not be delivered is a failed send (a warning),
        # not a crash of the job that had just completed.
        assert "worker failed to finish request" not in worker.errors()

    figures["Redis killed"] = (
        f"{len(all_ids)} requests running on 2 workers behind 2 servers, Redis SIGKILLed "
        f"for {outage_s:.1f} s and restarted empty; {len(ended_in_outage)} requests ended "
        f"during the outage (terminal frame undeliverable, result read back by "
        f"request.status): {reconnected}/{USERS} sockets had to reconnect, "
        f"{sum(len(v) for v in resumed.values())} requests resumed live, "
        f"{len(all_ids)}/{len(all_ids)} COMPLETED; lost: 0"
    )
