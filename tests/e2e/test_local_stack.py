"""The one-process local stack: ``manage.py serve`` with its in-process worker and the
in-memory channel layer, dynalite behind it, real sockets in front."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from bench.stack import Environment, Stack, http_get, running_stack
from bench.wsclient import check_request_stream, open_client

pytestmark = pytest.mark.e2e

QUICK = {"duration_s": 0, "steps": 1, "max_requests": 0, "include_connections": False}


@pytest.fixture(scope="module")
def stack(e2e: Environment) -> Iterator[Stack]:
    # No --with-worker/--no-worker: without REDIS_URL the worker runs in-process by default.
    with running_stack(e2e, "local") as running:
        yield running


def test_serve_runs_the_worker_in_process_by_default(stack: Stack) -> None:
    stack.servers[0].proc.wait_for_output("serving on")
    assert "with in-process worker" in stack.servers[0].proc.output()


async def test_healthz_and_metrics(stack: Stack) -> None:
    status, content_type, body = await asyncio.to_thread(
        http_get, f"{stack.servers[0].url}/healthz"
    )
    assert status == 200, body
    assert content_type.startswith("application/json")
    assert '"ok"' in body

    async with stack.client("metrics-user") as client:
        assert (await client.call("echo", {"x": 1}))["type"] == "response"
    status, content_type, body = await asyncio.to_thread(
        http_get, f"{stack.servers[0].url}/metrics"
    )
    assert status == 200
    assert content_type.startswith("text/plain")
    assert "# TYPE streamer_connects_total counter" in body
    assert 'streamer_connects_total{outcome="accepted"}' in body
    assert 'streamer_frames_in_total{type="request"}' in body


async def test_echo_round_trip(stack: Stack, measurements: dict[str, str]) -> None:
    # The token printed by `manage.py issue_token` works against the server.
    async with open_client(stack.servers[0].ws_url(stack.e2e.issued_token)) as client:
        payload = {"hello": "wörld", "n": [1, 2, 3], "nested": {"ok": True}}
        frame = await client.call("echo", payload)
        assert frame["type"] == "response", frame
        assert frame["success"] is True
        assert frame["data"] == {"echo": payload}
        assert isinstance(frame["timestamp"], int)

        await client.send({"type": "ping"})
        pong = await client.wait_for(lambda f: f["type"] == "pong", what="pong")
        assert isinstance(pong["timestamp"], int)


async def test_generate_report_streams_progress_then_one_complete(stack: Stack) -> None:
    async with stack.client("alice") as client:
        started = time.perf_counter()
        ack = await client.submit("report-1", {"duration_s": 2, "steps": 20})
        assert ack["type"] == "acknowledgment", ack
        assert ack["status"] == "queued"
        done = await client.terminal("report-1", within=20)
        elapsed = done["_rx"] - started
        await asyncio.sleep(0.5)  # anything after the terminal frame would show up now

        frames = client.about("report-1")
        check_request_stream(frames)
        progress = [f["percentage"] for f in frames if f["type"] == "progress"]
        assert len(progress) >= 3, progress
        assert progress[-1] == 100
        assert elapsed >= 1.5, elapsed  # the work is paced over about duration_s
        assert done["success"] is True
        assert done["result"]["steps"] == 20
        assert "by_status" in done["result"]["requests"]

        status = await client.call("request.status", {"request_id": "report-1", "subscribe": False})
        record = status["data"]
        assert record["status"] == "COMPLETED"
        assert record["percentage"] == 100
        assert record["result"] == done["result"]
        assert record["created_at"] <= record["started_at"] <= record["ended_at"]


async def test_resume_after_reconnect(stack: Stack) -> None:
    async with stack.client("resumer") as first:
        ack = await first.submit("resume-1", {"duration_s": 3, "steps": 30})
        assert ack["type"] == "acknowledgment"
        await first.wait_for(
            lambda f: (
                f.get("request_id") == "resume-1"
                and f["type"] == "progress"
                and f["percentage"] > 0
            ),
            what="first progress",
        )
    # The first socket is gone mid-job; a new one resumes.
    async with stack.client("resumer") as second:
        answer = await second.call("request.status", {"request_id": "resume-1", "subscribe": True})
        assert answer["type"] == "response", answer
        record = answer["data"]
        assert record["request_id"] == "resume-1"
        assert record["action"] == "generate_report"
        if record["status"] == "COMPLETED":
            assert "result" in record
            await asyncio.sleep(1.0)
            assert second.about("resume-1") == [], "nothing follows a finished record"
            return
        assert record["status"] in ("PENDING", "PROCESSING", "RETRYING"), record
        done = await second.terminal("resume-1", within=20)
        await asyncio.sleep(0.5)
        check_request_stream(second.about("resume-1"), expect_ack=False)
        assert done["type"] == "complete"
        final = await second.call("request.status", {"request_id": "resume-1", "subscribe": False})
        assert final["data"]["status"] == "COMPLETED"
        assert final["data"]["result"] == done["result"]


async def test_duplicate_request_id(stack: Stack) -> None:
    async with stack.client("duplicator") as client:
        ack = await client.submit("dup-1", {"duration_s": 1, "steps": 5})
        assert ack["type"] == "acknowledgment"
        dup = await client.submit("dup-1", QUICK)
        assert dup["type"] == "error", dup
        assert dup["error"]["code"] == "DUPLICATE_REQUEST"
        assert dup["error"]["retryable"] is False
        assert dup["error"]["details"]["status"] in ("PENDING", "PROCESSING")

        done = await client.terminal("dup-1", since=client.frames.index(dup) + 1)
        assert done["type"] == "complete"
        again = await client.submit("dup-1", {})
        assert again["error"]["code"] == "DUPLICATE_REQUEST"
        assert again["error"]["details"]["status"] == "COMPLETED"
        await asyncio.sleep(0.5)

        frames = client.about("dup-1")
        duplicates = [f for f in frames if f["type"] == "error"]
        assert len(duplicates) == 2
        assert all(f["error"]["code"] == "DUPLICATE_REQUEST" for f in duplicates)
        stream = [f for f in frames if f not in duplicates]
        check_request_stream(stream)
        assert [f["type"] for f in stream].count("acknowledgment") == 1
        # The original request ran with its own payload: 5 steps, not the duplicate's 1.
        assert done["result"]["steps"] == 5


async def test_cancel_a_running_report(stack: Stack) -> None:
    async with stack.client("canceller") as client:
        await client.submit("cancel-1", {"duration_s": 5, "steps": 50})
        await client.wait_for(
            lambda f: (
                f.get("request_id") == "cancel-1"
                and f["type"] == "progress"
                and f["percentage"] > 0
            ),
            what="first progress",
        )
        answer = await client.call("request.cancel", {"request_id": "cancel-1"})
        assert answer["type"] == "response", answer
        assert answer["data"]["status"] == "CANCELLED"
        assert answer["data"]["error"]["code"] == "CANCELLED"
        terminal = await client.terminal("cancel-1", within=5)
        assert terminal["type"] == "error"
        assert terminal["error"]["code"] == "CANCELLED"
        await asyncio.sleep(1.5)  # a complete must never follow, nor more progress
        check_request_stream(client.about("cancel-1"), terminal="error")

        status = await client.call("request.status", {"request_id": "cancel-1", "subscribe": False})
        assert status["data"]["status"] == "CANCELLED"
        # Cancelling again answers with the final record and sends nothing more.
        again = await client.call("request.cancel", {"request_id": "cancel-1"})
        assert again["data"]["status"] == "CANCELLED"
        await asyncio.sleep(0.3)
        assert len([f for f in client.about("cancel-1") if f["type"] == "error"]) == 1


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", 4401),
        ("garbage", 4401),
        ("wrong-secret", 4401),
        ("expired", 4401),
        ("no-tenant-claim", 4401),
        ("unknown-tenant", 4403),
    ],
)
async def test_bad_handshake_closes_with_code(stack: Stack, case: str, expected: int) -> None:
    mint = stack.e2e.mint
    token = {
        "missing": None,
        "garbage": "not-a-jwt",
        "wrong-secret": mint("alice", secret="another-secret-of-at-least-32-bytes!!"),
        "expired": mint("alice", exp=int(time.time()) - 120),
        "no-tenant-claim": mint("alice", tenant_id=None),
        "unknown-tenant": mint("alice", "no-such-tenant"),
    }[case]
    async with open_client(stack.servers[0].ws_url(token)) as client:
        assert await client.wait_closed(within=10) == expected
        assert client.frames == []
        # docs/protocol.md wants a short generic reason; daphne 4.2 drops the reason of a
        # server-side close (WebSocketProtocol.serverClose takes only a code), so it may
        # be empty here. Whatever comes must be short and generic.
        assert len(client.ws.close_reason) < 64
        assert "Error" not in client.ws.close_reason


async def test_tenant_isolation(stack: Stack) -> None:
    async with stack.client("alice") as alice:
        await alice.submit("iso-1", QUICK)
        await alice.terminal("iso-1")

    async def not_found(client, action: str, payload: dict) -> None:
        answer = await client.call(action, payload)
        assert answer["type"] == "error", answer
        assert answer["error"]["code"] == "NOT_FOUND"
        assert answer["request_id"].startswith("call-")

    # Another user of the same tenant, and the same user id in another tenant.
    for user, tenant in (("bob", "demo"), ("alice", "other")):
        async with stack.client(user, tenant) as other:
            await not_found(other, "request.status", {"request_id": "iso-1"})
            await not_found(other, "request.cancel", {"request_id": "iso-1"})
            listed = await other.call("request.list", {"limit": 100})
            assert "iso-1" not in [r["request_id"] for r in listed["data"]["requests"]]
            # Ids are scoped to the user: the same id is free for them.
            ack = await other.submit("iso-1", QUICK)
            assert ack["type"] == "acknowledgment", ack
            assert (await other.terminal("iso-1"))["type"] == "complete"

    async with stack.client("alice") as alice:
        record = (await alice.call("request.status", {"request_id": "iso-1"}))["data"]
        assert record["status"] == "COMPLETED"
        assert record["result"]["requests"]["total"] == 0  # QUICK reads no history


async def test_bad_frames_do_not_close_the_socket(stack: Stack) -> None:
    async with stack.client("sloppy") as client:
        await client.send("{not json")
        invalid = await client.wait_for(lambda f: f["type"] == "error", what="INVALID_MESSAGE")
        assert invalid["error"]["code"] == "INVALID_MESSAGE"
        assert invalid["request_id"] is None
        unknown = await client.call("no.such.action")
        assert unknown["error"]["code"] == "INVALID_ACTION"
        bad = await client.call("generate_report", {"duration_s": -1})
        assert bad["error"]["code"] == "VALIDATION_ERROR"
        assert (await client.call("echo", {"still": "open"}))["data"] == {"echo": {"still": "open"}}


async def test_socket_survives_server_side_close_of_another(stack: Stack) -> None:
    """Closing one socket abruptly does not disturb another socket of the same user."""
    async with stack.client("twin") as keeper:
        async with stack.client("twin") as dropped:
            await dropped.submit("twin-1", {"duration_s": 1, "steps": 5})
            await keeper.call("request.status", {"request_id": "twin-1", "subscribe": True})
            dropped.ws.transport.abort()  # no close handshake, like a lost network
        done = await keeper.terminal("twin-1", within=10)
        assert done["type"] == "complete"
