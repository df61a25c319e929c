"""JobContext (what a handler gets) and the queue's nudges through the channel layer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

from streaming.jobs import JobCancelled, JobContext
from streaming.lifecycle import WAKE_CHANNEL, WORKERS_GROUP, notify_cancelled, wake_worker
from streaming.output import OutputTooLarge
from streaming.progress import ProgressReporter

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")


async def make_ctx() -> tuple[JobContext, list[float]]:
    sent: list[float] = []

    async def publish(p: float, m: str, d: Any) -> None:
        sent.append(p)

    async def persist(p: float, m: str, d: Any) -> None:
        return None

    reporter = ProgressReporter(asyncio.get_running_loop(), publish, persist)
    ctx = JobContext("r1", "acme", "alice", "t.job", 1, reporter, metadata={"m": 1})
    return ctx, sent


async def test_report_forwards_to_the_reporter_until_cancelled() -> None:
    ctx, sent = await make_ctx()
    ctx.report(30, "a third")
    ctx.check()
    await ctx.sleep(0)
    await ctx.sleep(0.01)
    await ctx.reporter.close()
    assert sent == [30.0]
    ctx.cancelled.set()
    with pytest.raises(JobCancelled):
        ctx.report(40)
    with pytest.raises(JobCancelled):
        ctx.check()
    with pytest.raises(JobCancelled):
        await ctx.sleep(0)
    assert ctx.reporter.percentage == 30.0  # the refused report changed nothing


async def test_cancelling_from_another_thread_stops_a_sync_handler_at_its_next_report() -> None:
    ctx, _ = await make_ctx()
    reached: list[int] = []

    def handler() -> None:
        for i in range(1_000_000):
            ctx.report(i / 10_000)
            reached.append(i)
            if i == 100:
                ctx.cancelled.set()  # as the worker does, from elsewhere

    with pytest.raises(JobCancelled):
        await asyncio.to_thread(handler)
    assert reached[-1] == 100
    await ctx.reporter.close(flush=False)


# --- the queue -------------------------------------------------------------------------


async def test_wake_worker_sends_the_key_to_the_wake_channel(
    channel_layer: InMemoryChannelLayer,
) -> None:
    await wake_worker("acme#alice#r1")
    assert await asyncio.wait_for(channel_layer.receive(WAKE_CHANNEL), 5) == {
        "type": "request.ready",
        "key": "acme#alice#r1",
    }


async def test_notify_cancelled_reaches_every_worker(channel_layer: InMemoryChannelLayer) -> None:
    channels = [await channel_layer.new_channel("worker.") for _ in range(3)]
    for channel in channels:
        await channel_layer.group_add(WORKERS_GROUP, channel)
    await notify_cancelled("acme#alice#r1")
    for channel in channels:
        message = await asyncio.wait_for(channel_layer.receive(channel), 5)
        assert message == {"type": "request.cancelled", "key": "acme#alice#r1"}


class BrokenLayer:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        raise self.exc

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        raise self.exc


@pytest.mark.parametrize(
    ("layer", "logged"),
    [
        (None, ""),
        (BrokenLayer(ChannelFull("streamer.requests")), ""),  # polling finds it
        (BrokenLayer(ConnectionError("redis down")), "could not wake a worker"),
    ],
)
async def test_wake_worker_never_raises(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    layer: Any,
    logged: str,
) -> None:
    monkeypatch.setattr("streaming.lifecycle.get_channel_layer", lambda alias="default": layer)
    caplog.set_level(logging.WARNING, logger="streaming.lifecycle")
    await wake_worker("acme#alice#r1")
    assert logged in caplog.text
    if not logged:
        assert caplog.records == []


@pytest.mark.parametrize(
    ("layer", "logged"),
    [(None, ""), (BrokenLayer(ConnectionError("redis down")), "could not notify workers")],
)
async def test_notify_cancelled_never_raises(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    layer: Any,
    logged: str,
) -> None:
    monkeypatch.setattr("streaming.lifecycle.get_channel_layer", lambda alias="default": layer)
    caplog.set_level(logging.WARNING, logger="streaming.lifecycle")
    await notify_cancelled("acme#alice#r1")
    assert logged in caplog.text


@pytest.mark.parametrize(
    ("chunk", "error"),
    [
        ("x" * 65_536, OutputTooLarge),
        ([1], TypeError),
        (b"x", TypeError),
        (None, TypeError),
    ],
)
async def test_a_job_without_output_stream_checks_and_keeps_chunks(chunk, error) -> None:
    loop = asyncio.get_running_loop()

    async def sink(*_args) -> None:
        return None

    ctx = JobContext("r1", "acme", "alice", "t.job", 1, ProgressReporter(loop, sink, sink))
    ctx.write("ok")
    ctx.write({"row": 1})
    with pytest.raises(error):
        ctx.write(chunk)
    assert ctx.written == ["ok", {"row": 1}]
    ctx.cancelled.set()
    with pytest.raises(JobCancelled):
        ctx.write("late")
