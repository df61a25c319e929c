"""Workers dying and stopping: a worker killed with SIGKILL mid-request loses its lease
and another worker finishes the request; a worker stopped with SIGTERM releases it.

Redis mode (``serve --no-worker``): with the in-memory layer a separate worker process
could not deliver frames to the server's sockets. Short leases keep this quick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from bench.stack import Environment, Stack, running_stack
from bench.wsclient import check_request_stream

pytestmark = pytest.mark.e2e

LEASE_S = 2
WORKER_ENV = {"STREAMER_LEASE_S": str(LEASE_S), "STREAMER_POLL_INTERVAL_S": "0.2"}


@pytest.fixture(scope="module")
def stack(e2e: Environment) -> Iterator[Stack]:
    with running_stack(
        e2e, "crash", redis=True, servers=1, server_worker=False, env=WORKER_ENV
    ) as running:
        yield running


def progressed(request_id: str):
    return lambda f: (
        f.get("request_id") == request_id and f["type"] == "progress" and f["percentage"] > 0
    )


async def test_killed_worker_request_finishes_on_another(stack: Stack) -> None:
    first = stack.start_worker()
    async with stack.client("crash-user") as client:
        await client.submit("crash-1", {"duration_s": 4, "steps": 40})
        seen = await client.wait_for(progressed("crash-1"), what="first progress")
        first.kill9()
        killed_at = time.monotonic()
        assert first.popen.returncode == -9

        stored = await stack.read_record("crash-1", "crash-user")
        assert str(stored.status) == "PROCESSING"
        assert stored.attempts == 1

        stack.start_worker()
        done = await client.terminal("crash-1", within=30)
        recovered_in = time.monotonic() - killed_at
        await asyncio.sleep(1.0)  # a second terminal frame would arrive now

        frames = client.about("crash-1")
        check_request_stream(frames)
        assert done["type"] == "complete"
        assert done["result"]["steps"] == 40
        # The second attempt re-ran the whole report (about 4 s) after the lease expired.
        assert recovered_in >= LEASE_S, recovered_in
        assert max(f["percentage"] for f in frames if f["type"] == "progress") == 100
        assert seen["percentage"] > 0

    stored = await stack.read_record("crash-1", "crash-user")
    assert str(stored.status) == "COMPLETED"
    assert stored.attempts == 2
    assert stored.result == done["result"]


async def test_sigterm_releases_the_request_for_another_worker(stack: Stack) -> None:
    for worker in stack.workers:
        worker.stop()
    leaving = stack.start_worker("--grace", "0.5")
    async with stack.client("term-user") as client:
        await client.submit("term-1", {"duration_s": 3, "steps": 30})
        await client.wait_for(progressed("term-1"), what="first progress")
        stopped_at = time.monotonic()
        code = await asyncio.to_thread(leaving.stop, 15)
        assert code == 0, leaving.tail()
        assert time.monotonic() - stopped_at < 10
        assert "stopped after 0 requests" in leaving.output()

        # Released at once (no lease to wait for), and nothing terminal was sent.
        stored = await stack.read_record("term-1", "term-user")
        assert str(stored.status) == "RETRYING", stored
        assert stored.lease_owner is None
        assert [
            f["type"] for f in client.about("term-1") if f["type"] in ("complete", "error")
        ] == []

        stack.start_worker()
        done = await client.terminal("term-1", within=30)
        await asyncio.sleep(1.0)
        check_request_stream(client.about("term-1"))
        assert done["type"] == "complete"

    stored = await stack.read_record("term-1", "term-user")
    assert str(stored.status) == "COMPLETED"
    assert stored.attempts == 2


async def test_killed_worker_mid_stream_leaves_a_gap_free_output_stream(stack: Stack) -> None:
    """generate_report writes output as it goes; its worker is killed with SIGKILL after
    some chunks, another worker runs it again: the client sees one stream, seqs 1..N
    without gap or duplicate (attempt 1's stored chunks, then attempt 2's), and a client
    resuming with after_seq=0 gets exactly what is stored."""
    from storage.requests.model import RequestKey
    from storage.requests.output import output_store

    for worker in stack.workers:
        worker.stop()
    first = stack.start_worker()
    async with stack.client("out-user") as client:
        await client.submit("out-1", {"duration_s": 4, "steps": 40})
        await client.wait_for(
            lambda f: f.get("request_id") == "out-1" and f["type"] == "output" and f["seq"] >= 5,
            what="five output chunks",
        )
        first.kill9()
        stack.start_worker()
        done = await client.terminal("out-1", within=30)
        await asyncio.sleep(1.0)  # a late or repeated chunk would arrive now
        frames = client.about("out-1")
        check_request_stream(frames)
        assert done["type"] == "complete"

    seen = [(f["seq"], f["data"]) for f in frames if f["type"] == "output"]
    assert [seq for seq, _ in seen] == list(range(1, len(seen) + 1))
    steps = [data["step"] for _, data in seen if "step" in data]
    restart = next(i for i in range(1, len(steps)) if steps[i] < steps[i - 1])
    assert steps[restart] == 1, "the second attempt's report starts again at step 1"
    assert steps[restart:] == sorted(steps[restart:])

    stack.configure_store()
    key = RequestKey("demo", stack.user("out-user"), "out-1")
    stored = await asyncio.to_thread(lambda: list(output_store.iter_after(key, 0)))
    assert stored == seen
    record = await stack.read_record("out-1", "out-user")
    assert record.attempts == 2 and record.output_seq == len(seen)
