"""The consumer's loop over its sources (``streaming/dispatch_loop.py``): each source's
messages in order, one dispatch at a time, and a failure of a source or of a dispatch
ends the loop with that error and no reader left running."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streaming.dispatch_loop import dispatch_loop


class Source:
    """A message source fed by the test (like the socket or the channel)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.reads = 0

    async def __call__(self) -> Any:
        item = await self.queue.get()
        if isinstance(item, BaseException):
            raise item
        self.reads += 1
        return item


@pytest.mark.parametrize("count", [1, 3, 50])
async def test_messages_of_each_source_are_dispatched_in_order_one_at_a_time(count: int) -> None:
    socket, channel = Source(), Source()
    seen: list[Any] = []
    busy = False

    async def dispatch(message: Any) -> None:
        nonlocal busy
        assert not busy, "two dispatches overlapped"
        busy = True
        await asyncio.sleep(0)  # a handler that waits
        seen.append(message)
        busy = False
        if len(seen) == 2 * count:
            raise EOFError  # the test's way out

    for i in range(count):
        socket.queue.put_nowait(("socket", i))
        channel.queue.put_nowait(("channel", i))
    with pytest.raises(EOFError):
        await asyncio.wait_for(dispatch_loop([socket, channel], dispatch), 10)
    assert [m for m in seen if m[0] == "socket"] == [("socket", i) for i in range(count)]
    assert [m for m in seen if m[0] == "channel"] == [("channel", i) for i in range(count)]


@pytest.mark.parametrize("failing", ["source", "dispatch"])
async def test_a_failure_ends_the_loop_with_its_error_and_stops_the_readers(failing: str) -> None:
    socket, channel = Source(), Source()

    async def dispatch(message: Any) -> None:
        if failing == "dispatch":
            raise ConnectionError("handler failed")

    socket.queue.put_nowait("first")
    if failing == "source":
        socket.queue.put_nowait(ConnectionError("layer down"))
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(dispatch_loop([socket, channel], dispatch), 10)
    reads = (socket.reads, channel.reads)
    socket.queue.put_nowait("late")
    channel.queue.put_nowait("late")
    for _ in range(5):
        await asyncio.sleep(0)
    assert (socket.reads, channel.reads) == reads, "a reader still runs"
