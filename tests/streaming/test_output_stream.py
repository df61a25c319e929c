"""Output streams end to end in one process: real sockets of the ASGI application
(WebsocketCommunicator), a real worker on the same loop, moto for storage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from streaming.actions.registry import action, registry
from streaming.worker import Worker
from tests.support.sockets import Client, connected

GATES: dict[str, asyncio.Event] = {}


pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("asgi_settings")]


def chunk(i: int) -> Any:
    return f"line {i}" if i % 3 else {"row": i}


@pytest.fixture
def stream_action() -> Any:
    """``test.stream``: writes ``count`` chunks; waits at ``pause_at`` for its gate."""

    @action("test.stream", mode="async")
    async def stream(job: Any, payload: dict[str, Any]) -> int:
        for i in range(1, payload["count"] + 1):
            job.write(chunk(i))
            if i == payload.get("pause_at"):
                await GATES[job.request_id].wait()
            elif i % 200 == 0:
                await asyncio.sleep(0)
        return payload["count"]

    yield stream
    registry.unregister("test.stream")
    GATES.clear()


@asynccontextmanager
async def worker_running() -> AsyncIterator[Worker]:
    worker = Worker(poll_interval_s=0.05, grace_s=1)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def frames_until_terminal(client: Client, request_id: str) -> list[dict[str, Any]]:
    seen = []
    while True:
        frame = await client.recv(10)
        if frame.get("request_id") != request_id:
            continue
        seen.append(frame)
        if frame["type"] in ("complete", "error"):
            return seen


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    outputs = [f for f in frames if f["type"] == "output"]
    assert all(f["data"] == chunk(f["seq"]) for f in outputs)
    return [f["seq"] for f in outputs]


async def test_ten_thousand_chunks_on_one_socket(live, stream_action) -> None:
    async with worker_running(), connected() as client:
        await client.send({"action": "test.stream", "id": "big", "payload": {"count": 10_000}})
        frames = await frames_until_terminal(client, "big")
    assert frames[0]["type"] == "acknowledgment"
    assert frames[-1]["type"] == "complete" and frames[-1]["result"] == 10_000
    assert seqs(frames) == list(range(1, 10_001))
    assert {f["type"] for f in frames[1:-1]} <= {"output", "progress"}


@pytest.mark.parametrize("after_seq", [0, 400, 1000])
@pytest.mark.parametrize("release", ["before status", "after status", "never paused"])
async def test_resume_mid_stream_gets_every_chunk_once(
    live, stream_action, after_seq: int, release: str
) -> None:
    """A second socket of the same user asks for the output after ``after_seq`` while
    the stream is paused at 1000, or running on (released just before or just after the
    status request, or never paused)."""
    request_id = f"mid-{after_seq}-{release.replace(' ', '-')}"
    gate = GATES[request_id] = asyncio.Event()
    payload = {"count": 3000, "pause_at": None if release == "never paused" else 1000}
    async with worker_running(), connected() as sender, connected() as reader:
        await sender.send({"action": "test.stream", "id": request_id, "payload": payload})
        while True:  # the sender has seen chunk 1000 (stored before it was sent)
            frame = await sender.recv(10)
            if frame["type"] == "output" and frame["seq"] == 1000:
                break
        if release == "before status":
            gate.set()
        status = {"request_id": request_id, "after_seq": after_seq}
        await reader.send({"action": "request.status", "id": "st", "payload": status})
        if release == "after status":
            gate.set()
        response = await reader.recv(10)
        while response.get("request_id") != "st":  # a live frame may come first
            response = await reader.recv(10)
        if response["data"]["status"] == "COMPLETED":  # it ran to its end meanwhile
            frames = [await reader.recv(10) for _ in range(3000 - after_seq)]
            assert await reader.silent()  # the terminal frame was the response itself
        else:
            frames = await frames_until_terminal(reader, request_id)
            assert frames[-1]["type"] == "complete"
        gate.set()

    assert response["type"] == "response" and response["data"]["output_seq"] >= 1000
    assert seqs(frames) == list(range(after_seq + 1, 3001))


async def test_status_of_a_finished_request_replays_its_output(live, stream_action) -> None:
    async with worker_running(), connected() as client:
        await client.send({"action": "test.stream", "id": "done", "payload": {"count": 1500}})
        await frames_until_terminal(client, "done")
        status = {"request_id": "done", "after_seq": 1200}
        reply = await client.request("request.status", status, id="st")
        replayed = [await client.recv(10) for _ in range(300)]
        assert await client.silent()
    assert reply["data"]["status"] == "COMPLETED" and reply["data"]["output_seq"] == 1500
    assert seqs(replayed) == list(range(1201, 1501))


@pytest.mark.parametrize("after_seq", [-1, "x", 1.5])
async def test_bad_after_seq_is_a_validation_error(live, after_seq: Any) -> None:
    async with connected() as client:
        reply = await client.request("request.status", {"request_id": "r", "after_seq": after_seq})
    assert reply["type"] == "error" and reply["error"]["code"] == "VALIDATION_ERROR"
    assert reply["error"]["details"]["errors"][0]["field"] == "payload.after_seq"


async def test_after_seq_of_an_unknown_request_is_not_found(live) -> None:
    async with connected() as client:
        reply = await client.request("request.status", {"request_id": "nope", "after_seq": 3})
        assert reply["error"]["code"] == "NOT_FOUND"
        assert await client.silent()
