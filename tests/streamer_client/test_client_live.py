"""The Python client end to end against a live stack (dynalite, daphne, worker)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from bench.stack import Stack
from streamer_client import Backoff, Progress, StreamerClient, StreamerError
from tests.streamer_client.proxy import DroppingProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FAST = Backoff(initial_s=0.1, max_s=1.0, factor=2, jitter=0.2)


def user() -> str:
    return f"py-{uuid.uuid4().hex[:8]}"


class Recorder:
    """Collects a client's events."""

    def __init__(self) -> None:
        self.states: list[str] = []
        self.messages: list[dict[str, Any]] = []
        self.errors: list[StreamerError] = []
        self.progress: list[Progress] = []

    def kwargs(self) -> dict[str, Any]:
        return {
            "on_state": self.states.append,
            "on_message": self.messages.append,
            "on_error": self.errors.append,
        }


async def test_echo_and_request_list(live_stack: Stack) -> None:
    events = Recorder()
    async with StreamerClient(
        live_stack.ws_url, token=live_stack.issue_token(user()), **events.kwargs()
    ) as client:
        assert client.state == "open"
        data = await client.request("echo", {"hello": "world", "n": [1, 2]})
        assert data == {"echo": {"hello": "world", "n": [1, 2]}}
        await client.request("generate_report", {"duration_s": 0, "steps": 1}, id="listed-1")
        listing = await client.request("request.list", {"limit": 5})
        assert [r["request_id"] for r in listing["requests"]] == ["listed-1"]
        assert listing["requests"][0]["status"] == "COMPLETED"
    assert events.states == ["connecting", "open", "closed"]
    assert events.errors == []


async def test_generate_report_reports_progress_and_returns_the_result(
    live_stack: Stack,
) -> None:
    progress: list[Progress] = []
    acks: list[dict[str, Any]] = []
    async with StreamerClient(live_stack.ws_url, token=live_stack.issue_token(user())) as client:
        result = await client.request(
            "generate_report",
            {"duration_s": 1, "steps": 5},
            on_progress=progress.append,
            on_acknowledged=acks.append,
            metadata={"trace": "t-1"},
        )
    assert [a["status"] for a in acks] == ["queued"]
    percentages = [p.percentage for p in progress]
    assert percentages == sorted(percentages)
    assert percentages[-1] == 100
    assert len(percentages) >= 3
    assert result["steps"] == 5
    assert "requests" in result and "connections" in result


async def test_typed_error_for_an_invalid_payload(live_stack: Stack) -> None:
    async with StreamerClient(live_stack.ws_url, token=live_stack.issue_token(user())) as client:
        with pytest.raises(StreamerError) as caught:
            await client.request("generate_report", {"duration_s": 9999}, id="bad-1")
        with pytest.raises(StreamerError) as unknown:
            await client.request("no.such.action", {})
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.retryable is False
    assert caught.value.request_id == "bad-1"
    assert any("duration_s" in e["field"] for e in caught.value.details["errors"])
    assert unknown.value.code == "INVALID_ACTION"


async def test_resumes_after_the_client_socket_is_dropped_mid_job(live_stack: Stack) -> None:
    events = Recorder()
    tokens: list[str] = []
    name = user()

    def get_token() -> str:
        tokens.append(live_stack.issue_token(name))
        return tokens[-1]

    async with StreamerClient(
        live_stack.ws_url, get_token=get_token, backoff=FAST, **events.kwargs()
    ) as client:
        halfway = asyncio.Event()

        def on_progress(p: Progress) -> None:
            events.progress.append(p)
            if p.percentage >= 20:
                halfway.set()

        job = asyncio.create_task(
            client.request(
                "generate_report",
                {"duration_s": 3, "steps": 10},
                on_progress=on_progress,
                id="drop-1",
            )
        )
        await asyncio.wait_for(halfway.wait(), 20)
        client.drop_connection()
        result = await asyncio.wait_for(job, 30)
        record = await client.request(
            "request.status", {"request_id": "drop-1", "subscribe": False}
        )
        await asyncio.sleep(0.3)  # nothing more may arrive about it
    assert events.states[:2] == ["connecting", "open"]
    assert "reconnecting" in events.states
    assert events.states[-2:] == ["open", "closed"]
    assert len(tokens) >= 2, "a fresh token for the reconnection"
    assert record["status"] == "COMPLETED"
    assert record["result"] == result
    percentages = [p.percentage for p in events.progress]
    # never down; the 100 % frame itself may have gone out while the socket was away
    # (the resumed record says where the request got to)
    assert percentages == sorted(percentages)
    assert record["percentage"] == 100
    assert not [m for m in events.messages if m.get("request_id") == "drop-1"]
    assert client.pending_ids == []


async def test_resumes_when_the_network_drops_every_connection(live_stack: Stack) -> None:
    """The socket dies on the server's side (a proxy cuts it): same outcome."""
    events = Recorder()
    port = int(live_stack.base.rsplit(":", 1)[1])
    async with DroppingProxy(port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/ws"
        async with StreamerClient(
            url, token=live_stack.issue_token(user()), backoff=FAST, **events.kwargs()
        ) as client:
            started = asyncio.Event()
            job = asyncio.create_task(
                client.request(
                    "generate_report",
                    {"duration_s": 2, "steps": 8},
                    on_progress=lambda p: started.set() if p.percentage >= 25 else None,
                )
            )
            await asyncio.wait_for(started.wait(), 20)
            proxy.drop_all()
            result = await asyncio.wait_for(job, 30)
    assert result["steps"] == 8
    assert proxy.connections >= 2
    assert events.states.count("reconnecting") >= 1


async def test_cancelling_the_task_cancels_the_request(live_stack: Stack) -> None:
    async with StreamerClient(live_stack.ws_url, token=live_stack.issue_token(user())) as client:
        acked = asyncio.Event()
        job = asyncio.create_task(
            client.request(
                "generate_report",
                {"duration_s": 30, "steps": 30},
                id="cancel-1",
                on_acknowledged=lambda _: acked.set(),
            )
        )
        await asyncio.wait_for(acked.wait(), 10)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        record: dict[str, Any] = {}
        for _ in range(50):
            record = await client.request("request.status", {"request_id": "cancel-1"})
            if record["status"] == "CANCELLED":
                break
            await asyncio.sleep(0.1)
        assert record["status"] == "CANCELLED"
        assert record["error"]["code"] == "CANCELLED"


async def test_explicit_cancel_rejects_the_pending_request(live_stack: Stack) -> None:
    async with StreamerClient(live_stack.ws_url, token=live_stack.issue_token(user())) as client:
        acked = asyncio.Event()
        job = asyncio.create_task(
            client.request(
                "generate_report",
                {"duration_s": 30, "steps": 30},
                id="cancel-2",
                on_acknowledged=lambda _: acked.set(),
            )
        )
        await asyncio.wait_for(acked.wait(), 10)
        record = await client.cancel("cancel-2")
        assert record["status"] == "CANCELLED"
        with pytest.raises(StreamerError) as caught:
            await asyncio.wait_for(job, 10)
        assert caught.value.code == "CANCELLED"
        assert caught.value.request_id == "cancel-2"


async def test_invalid_token_is_refused_without_retrying_forever(live_stack: Stack) -> None:
    events = Recorder()
    client = StreamerClient(live_stack.ws_url, token="not-a-jwt", backoff=FAST, **events.kwargs())
    with pytest.raises(StreamerError) as caught:
        await asyncio.wait_for(client.connect(), 10)
    assert caught.value.code == "UNAUTHORIZED"
    assert caught.value.close_code == 4401
    assert client.state == "closed"
    assert [e.code for e in events.errors] == ["UNAUTHORIZED"]
    assert "open" not in events.states
    with pytest.raises(StreamerError) as after:
        await client.request("echo", {})
    assert after.value.code == "CLOSED"


async def test_invalid_token_from_get_token_is_retried_once(live_stack: Stack) -> None:
    calls: list[int] = []

    def get_token() -> str:
        calls.append(1)
        return "still-not-a-jwt"

    client = StreamerClient(live_stack.ws_url, get_token=get_token, backoff=FAST)
    with pytest.raises(StreamerError) as caught:
        await asyncio.wait_for(client.request("echo", {}), 10)
    assert caught.value.code == "UNAUTHORIZED"
    assert len(calls) == 2
    await client.close()


async def test_watch_follows_a_request_started_by_another_client(live_stack: Stack) -> None:
    """Two clients of one user: the watching one is told of the other's request (an
    acknowledgment with its action), sees its progress and gets its result."""
    name = user()
    announced: list[Any] = []
    progress: list[float] = []
    heard = asyncio.Event()

    def on_request(watched: Any) -> None:
        watched.on_progress(lambda p: progress.append(p.percentage))
        announced.append(watched)
        heard.set()

    async with (
        StreamerClient(
            live_stack.ws_url, token=live_stack.token(name), on_request=on_request
        ) as watcher,
        StreamerClient(live_stack.ws_url, token=live_stack.token(name)) as tab,
    ):
        assert await watcher.watch() == {"watching": True, "requests": []}
        result = await tab.request(
            "generate_report", {"duration_s": 0.5, "steps": 5, "max_requests": 0}, id="seen-1"
        )
        await asyncio.wait_for(heard.wait(), 10)  # two sockets: no order between them
        assert [(w.request_id, w.action) for w in announced] == [("seen-1", "generate_report")]
        assert await asyncio.wait_for(announced[0].result, 10) == result
        assert progress and progress[-1] == 100
        assert progress == sorted(progress)
        assert await watcher.watch(False) == {"watching": False, "requests": []}
        await tab.request("generate_report", {"duration_s": 0, "steps": 1}, id="unseen")
        assert len(announced) == 1
