"""Workers record a heartbeat while they run and remove it when they stop cleanly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from storage import base, heartbeat
from storage.errors import StorageUnavailable
from storage.heartbeat import Heartbeat
from streaming.worker import Worker

pytestmark = pytest.mark.usefixtures("admin_state")


async def _beats() -> list[Heartbeat]:
    return await asyncio.to_thread(heartbeat.list_heartbeats)


async def _until(predicate: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(5):
        while not await predicate():  # noqa: ASYNC110  (polling storage)
            await asyncio.sleep(0.02)


async def test_worker_beats_while_running_and_forgets_on_stop(
    moto_dynamodb: base.StoreConfig,
) -> None:
    worker = Worker(worker_id="test:1:abc", poll_interval_s=0.05)
    worker.heartbeat_interval_s = 0.05
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))

    async def beating() -> bool:
        return bool(await _beats())

    await _until(beating)
    [first] = await _beats()
    assert first.worker_id == "test:1:abc" and first.jobs == 0
    assert first.is_alive(base.now_ms())

    async def beat_again() -> bool:
        return (await _beats())[0].last_beat > first.last_beat

    await _until(beat_again)
    assert (await _beats())[0].started_at == first.started_at
    stop.set()
    await asyncio.wait_for(task, 10)
    assert await _beats() == []


async def test_a_failing_heartbeat_never_stops_the_worker(
    moto_dynamodb: base.StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    def down(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        raise StorageUnavailable("storage unavailable during heartbeat.beat")

    monkeypatch.setattr(heartbeat, "beat", down)
    monkeypatch.setattr(heartbeat, "forget", down)
    worker = Worker(worker_id="test:2:abc", poll_interval_s=0.05)
    worker.heartbeat_interval_s = 0.02
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="streaming.worker")
    task = asyncio.create_task(worker.run(stop))

    async def retried() -> bool:
        return calls >= 3

    await _until(retried)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 10)
    text = caplog.text
    assert "could not record its heartbeat" in text
    assert "could not remove its heartbeat" in text
