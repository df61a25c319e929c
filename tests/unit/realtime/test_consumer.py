"""Consumer behaviour beyond single frames: idle timeout, pushed frames, edge cases."""

from __future__ import annotations

import asyncio
import time

import pytest

from connections.store.connection import ConnectionModel
from streaming.consumer import StreamerConsumer

from .helpers import connected

pytestmark = pytest.mark.django_db(transaction=True)


async def test_idle_connection_is_closed(live, settings) -> None:
    settings.STREAMER_IDLE_TIMEOUT_S = 0.3
    async with connected() as client:
        started = time.monotonic()
        code, reason = await client.closed_with(3)
        elapsed = time.monotonic() - started
        assert code == 1000
        assert reason
        assert 0.25 <= elapsed < 2


@pytest.mark.parametrize("frame", [{"type": "ping"}, {"action": "echo"}, "not json"])
async def test_any_frame_counts_as_activity(live, settings, frame) -> None:
    settings.STREAMER_IDLE_TIMEOUT_S = 0.5
    async with connected() as client:
        started = time.monotonic()
        for _ in range(6):  # 0.9 s of activity, well past the timeout
            await asyncio.sleep(0.15)
            await client.ask(frame)  # fails if the socket was closed meanwhile
        active_for = time.monotonic() - started
        code, _ = await client.closed_with(3)
        assert code == 1000
        assert time.monotonic() - started >= active_for + 0.45


async def test_idle_close_then_disconnect_removes_record(live, settings) -> None:
    settings.STREAMER_IDLE_TIMEOUT_S = 0.2
    async with connected() as client:
        await client.closed_with(3)
        assert len(list(ConnectionModel.scan())) == 1
    assert list(ConnectionModel.scan()) == []


async def test_without_session_nothing_is_sent() -> None:
    consumer = StreamerConsumer()
    sent: list[dict] = []

    async def send(message):  # pragma: no cover - must not be called
        sent.append(message)

    consumer.base_send = send
    await consumer.streamer_frame({"type": "streamer.frame", "text": "{}", "request_id": "r"})
    await consumer.receive(text_data='{"type": "ping"}')
    consumer._idle_check()
    await consumer.disconnect(1000)
    assert sent == []
