"""Storage faults with real processes killed for real (SIGKILL), on dynalite on disk.

* The embedded DynamoDB dies mid-run: clients get SERVICE_UNAVAILABLE for whatever
  needs storage and close 1011 on a new connect, ``echo`` keeps working, nothing is
  half-written; once dynalite restarts on the same port and data, every request that
  was acknowledged before the fault completes exactly once.
* The whole local stack (``serve`` with its in-process worker, and dynalite) dies at
  once and is started again on the same data: acknowledged requests resume and
  complete, results stored before the crash are still there.

A worker alone killed mid-request is tests/e2e/test_worker_crash.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bench.stack import Environment, Stack, http_get, running_stack
from bench.wsclient import WSClient, check_request_stream

pytestmark = pytest.mark.e2e

LEASE_S = 3
ENV = {"STREAMER_LEASE_S": str(LEASE_S), "STREAMER_POLL_INTERVAL_S": "0.2"}
QUICK = {"duration_s": 0, "steps": 1, "max_requests": 0, "include_connections": False}
# Runs for about 3 s without touching storage: its final write meets the outage.
BLIND = {"duration_s": 3, "steps": 15, "max_requests": 0, "include_connections": False}
# Reads the caller's history at every step: the handler itself meets the outage.
READER = {"duration_s": 3, "steps": 15, "max_requests": 100, "include_connections": True}
SETTLE_S = 1.0  # a duplicate terminal frame would arrive within this


def progressed(request_id: str):
    return lambda f: (
        f.get("request_id") == request_id and f["type"] == "progress" and f["percentage"] > 0
    )


def service_unavailable(frame: dict[str, Any]) -> None:
    assert frame["type"] == "error", frame
    assert frame["error"]["code"] == "SERVICE_UNAVAILABLE", frame
    assert frame["error"]["retryable"] is True, frame


def wait_for_log(stack: Stack, text: str, count: int, within: float) -> None:
    """Block until the server's log says ``text`` ``count`` times (bounded)."""
    proc = stack.servers[0].proc
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (proc.output() + proc.errors()).count(text) >= count:
            return
        time.sleep(0.1)
    raise proc.failure(f"{text!r} not logged {count} times within {within}s")


async def wait_healthz(stack: Stack, status: int, within: float = 20.0, server: int = 0) -> None:
    url = f"{stack.servers[server].url}/healthz"
    deadline = time.monotonic() + within
    last: tuple[int, str, str] | None = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(http_get, url, 8.0)
        if last[0] == status:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"/healthz never answered {status}: {last}")


async def test_storage_killed_mid_run_then_restarted(
    fault_env: Environment, figures: dict[str, str]
) -> None:
    dynalite = fault_env.dynalite
    assert dynalite is not None
    # Sixteen slots: one tenant's share (half) runs all eight requests at once.
    with running_stack(
        fault_env, "dbdown", env={**ENV, "STREAMER_WORKER_CONCURRENCY": "16"}
    ) as stack:
        async with stack.client("a") as sender, stack.client("a") as watcher:
            ids = [f"pre-{i}" for i in range(8)]
            for i, request_id in enumerate(ids):
                ack = await sender.submit(request_id, BLIND if i % 2 else READER)
                assert ack["type"] == "acknowledgment", ack
            watched = ids[::2]
            for request_id in watched:
                answer = await watcher.call("request.status", {"request_id": request_id})
                assert answer["type"] == "response", answer
            for request_id in ids:
                await sender.wait_for(progressed(request_id), what=f"progress of {request_id}")

            dynalite.kill9()
            outage_started = time.monotonic()

            # Echo needs no storage and still works.
            answer = await sender.call("echo", {"during": "outage"})
            assert answer["data"] == {"echo": {"during": "outage"}}, answer
            # Everything that needs storage says so, retryably.
            for action, payload in (
                ("request.status", {"request_id": ids[0]}),
                ("request.list", {}),
                ("request.cancel", {"request_id": ids[1]}),
            ):
                service_unavailable(await sender.call(action, payload, within=20))
            service_unavailable(await sender.submit("during-outage", QUICK, within=20))
            # A new connection cannot be registered: 1011, try again later.
            async with stack.client("late") as late:
                assert await late.wait_closed(within=20) == 1011
            await wait_healthz(stack, 503)
            assert not sender.closed and not watcher.closed

            # Every running handler meets the outage: the readers at their next read,
            # the blind ones at their completion write. Restart only after that.
            await asyncio.to_thread(
                wait_for_log, stack, "worker failed to finish request", len(ids), 30
            )
            dynalite.start()
            outage_s = time.monotonic() - outage_started

            done = {r: await sender.terminal(r, within=45) for r in ids}
            for request_id in watched:
                await watcher.terminal(request_id, within=15)
            await asyncio.sleep(SETTLE_S)

            for request_id in ids:
                assert done[request_id]["type"] == "complete", done[request_id]
                check_request_stream(sender.about(request_id))
            for request_id in watched:
                check_request_stream(watcher.about(request_id), expect_ack=False)
            # Frames about the requests the watcher did not subscribe to never reach it.
            assert not [f for f in watcher.frames if f.get("request_id") in set(ids) - set(watched)]

            # Nothing was half-written during the outage.
            answer = await sender.call("request.status", {"request_id": "during-outage"})
            assert answer["type"] == "error" and answer["error"]["code"] == "NOT_FOUND", answer
            listed = (await sender.call("request.list", {"limit": 100}))["data"]["requests"]
            assert sorted(r["request_id"] for r in listed) == sorted(ids)

        stored = await stack.read_records(ids, "a")
        assert {str(s.status) for s in stored} == {"COMPLETED"}, [
            (s.request_id, str(s.status)) for s in stored
        ]
        assert all(s.result == done[s.request_id]["result"] for s in stored)
        attempts = [s.attempts for s in stored]
        assert all(a >= 2 for a in attempts), attempts  # each was re-run after the fault

        async with stack.client("after") as after:
            assert (await after.call("echo", {}))["type"] == "response"
        await wait_healthz(stack, 200)
        # The 1011 refusal is a clean close, not a crash of the consumer.
        log = stack.servers[0].proc.errors()
        assert "Exception inside application" not in log

    figures["storage killed mid-run"] = (
        f"{len(ids)} acknowledged requests in flight ({len(watched)} also subscribed "
        f"from a second socket), dynalite SIGKILLed for {outage_s:.1f} s: "
        f"{len(ids)}/{len(ids)} completed exactly once after restart (attempts "
        f"{sorted(attempts)}), 1 request refused with SERVICE_UNAVAILABLE and not stored, "
        "new connect closed 1011, echo answered; lost: 0"
    )


async def resume(client: WSClient, request_id: str) -> dict[str, Any]:
    """request.status with subscribe: the public record."""
    answer = await client.call("request.status", {"request_id": request_id, "subscribe": True})
    assert answer["type"] == "response", answer
    return answer["data"]


async def test_whole_stack_killed_and_restarted(
    fault_env: Environment, figures: dict[str, str]
) -> None:
    dynalite = fault_env.dynalite
    assert dynalite is not None
    # A tenant's share of eight slots is four, for six slow requests: at the crash four
    # run and two wait.
    env = {**ENV, "STREAMER_WORKER_CONCURRENCY": "8"}
    with running_stack(fault_env, "crash", env=env) as stack:
        quick = [f"quick-{i}" for i in range(3)]
        slow = [f"slow-{i}" for i in range(6)]
        async with stack.client("c") as client:
            results = {}
            for request_id in quick:
                await client.submit(request_id, QUICK)
                results[request_id] = (await client.terminal(request_id))["result"]
            for request_id in slow:
                ack = await client.submit(request_id, {"duration_s": 4, "steps": 20})
                assert ack["type"] == "acknowledgment", ack
            for request_id in slow[:4]:
                await client.wait_for(progressed(request_id), what=f"progress of {request_id}")
            before = await stack.read_records(slow, "c")
            assert sorted(str(s.status) for s in before) == ["PENDING"] * 2 + ["PROCESSING"] * 4

            stack.servers[0].proc.kill9()
            dynalite.kill9()
            assert await client.wait_closed() in (1006, 1011, 1001, None)

        dynalite.start()
        stack.start_server()
        resumed: list[str] = []
        async with stack.client("c", server=-1) as again:
            for request_id in quick:
                record = await resume(again, request_id)
                assert record["status"] == "COMPLETED", record
                assert record["result"] == results[request_id]
            for request_id in slow:
                record = await resume(again, request_id)
                if record["status"] == "COMPLETED":
                    assert "result" in record
                    continue
                assert record["status"] in ("PENDING", "PROCESSING", "RETRYING"), record
                resumed.append(request_id)
            done = {r: await again.terminal(r, within=45) for r in resumed}
            await asyncio.sleep(SETTLE_S)
            for request_id in resumed:
                assert done[request_id]["type"] == "complete", done[request_id]
                assert done[request_id]["result"]["steps"] == 20
                check_request_stream(again.about(request_id), expect_ack=False)
            for request_id in quick:
                assert again.about(request_id) == [], "nothing more about finished requests"

        stored = {s.request_id: s for s in await stack.read_records(quick + slow, "c")}
        assert {str(s.status) for s in stored.values()} == {"COMPLETED"}
        assert all(stored[r].result == results[r] for r in quick)
        assert all(stored[r].result == done[r]["result"] for r in resumed)
        assert sorted(stored[r].attempts for r in slow) == [1, 1, 2, 2, 2, 2]

    figures["whole stack killed"] = (
        f"serve+worker and dynalite SIGKILLed together with {len(quick)} finished, 4 running "
        f"and 2 queued requests: after restart {len(quick)}/{len(quick)} results still "
        f"stored, {len(slow)}/{len(slow)} acknowledged requests completed exactly once "
        f"({len(resumed)} resumed live via request.status); lost: 0"
    )
