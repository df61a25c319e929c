"""Consumer behaviour beyond single frames: idle timeout, pushed frames, edge cases."""

from __future__ import annotations

import asyncio
import time

import pytest

from storage.connection import ConnectionModel
from streaming.consumer import StreamerConsumer
from tests.support.sockets import connected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("asgi_settings")]


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


@pytest.mark.parametrize(("interval", "touched"), [(0, True), (3600, False)])
async def test_activity_records_last_seen_at_most_once_per_interval(
    live, settings, interval, touched
) -> None:
    settings.STREAMER_TOUCH_INTERVAL_S = interval
    async with connected() as client:
        [before] = list(ConnectionModel.scan())
        await asyncio.sleep(0.05)
        await client.ask({"type": "ping"})
        for _ in range(50):  # the write happens in the background
            [after] = list(ConnectionModel.scan())
            if after.last_seen != before.last_seen:
                break
            await asyncio.sleep(0.02)
        assert (after.last_seen > before.last_seen) is touched


async def test_a_failed_touch_does_not_disturb_the_connection(live, settings, monkeypatch) -> None:
    from storage.connection import connection_store
    from storage.errors import StorageUnavailable

    def down(*args, **kwargs):
        raise StorageUnavailable("down")

    settings.STREAMER_TOUCH_INTERVAL_S = 0
    monkeypatch.setattr(connection_store, "touch", down)
    async with connected() as client:
        for _ in range(3):
            assert (await client.ask({"type": "ping"}))["type"] == "pong"
