"""The benchmark's ``bench.output`` action: what it writes is what bench/output_stream.py
counts (a real worker, a socket of the ASGI application, moto for storage)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from streaming import benchmarks
from streaming.actions.registry import registry
from streaming.worker import Worker
from tests.support.sockets import connected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("asgi_settings")]


@pytest.fixture
def bench_actions() -> Iterator[None]:
    benchmarks.register()
    yield
    for name in ("bench.noop", "bench.flood", "bench.output"):
        registry.unregister(name)


@asynccontextmanager
async def worker_running() -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(poll_interval_s=0.05, grace_s=1).run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest.mark.parametrize(
    ("payload", "seqs", "result"),
    [
        ({"chunks": 1500, "chunk_bytes": 5}, list(range(1, 1501)), 1500),
        ({"chunks": 5, "chunk_bytes": 3, "pace_ms": 1}, [1, 2, 3, 4, 5], 5),
        ({"chunks": 50, "write": False}, [], 0),
        ({"chunks": 0}, [], 0),
    ],
    ids=["burst", "paced", "without output", "nothing"],
)
async def test_bench_output_writes_its_chunks_in_order(
    live: Any, bench_actions: None, payload: dict[str, Any], seqs: list[int], result: int
) -> None:
    async with worker_running(), connected() as client:
        await client.send({"action": "bench.output", "id": "b1", "payload": payload})
        frames = []
        while not frames or frames[-1]["type"] not in ("complete", "error"):
            frame = await client.recv(10)
            if frame.get("request_id") == "b1":
                frames.append(frame)
    outputs = [f for f in frames if f["type"] == "output"]
    assert [f["seq"] for f in outputs] == seqs
    assert all(f["data"] == "x" * payload.get("chunk_bytes", 16) for f in outputs)
    assert frames[-1]["type"] == "complete" and frames[-1]["result"] == {"chunks": result}


@pytest.mark.parametrize(
    "payload", [{"chunk_bytes": 65_535}, {"chunks": -1}, {"pace_ms": 1001}, {"write": "x"}]
)
async def test_bench_output_refuses_a_bad_payload(
    live: Any, bench_actions: None, payload: dict[str, Any]
) -> None:
    async with connected() as client:
        await client.send({"action": "bench.output", "id": "b2", "payload": payload})
        frame = await client.recv(10)
    assert frame["type"] == "error" and frame["error"]["code"] == "VALIDATION_ERROR"
