"""Frames waiting for one client, bounded in bytes (docs/protocol.md §5: 1 MiB of unsent
frames per connection, then close 4408).

The ASGI spec gives an application no way to see what the server has not written to
the socket yet, and servers differ: uvicorn (websockets) blocks ``websocket.send``
while the client does not read; daphne (Twisted) never blocks and buffers without
bound. So each connection owns an :class:`Outbox`:

* when the server blocks, frames wait in the outbox's own queue and one writer task
  sends them in order; the consumer's handlers never wait on a slow socket, so its
  channel keeps draining;
* when the server tells how many bytes it buffers (the ``streamer.output_buffer``
  scope extension, added for daphne by :mod:`streaming.server_integration`), frames
  go straight to the server and its buffer is what is counted.

Either way, when the bytes waiting (queued + buffered by the server) would pass the
limit, the outbox stops accepting frames and calls ``on_overflow`` once.

A request's output frames (as fast as its handler writes, or a replay of up to 8 MiB
at once) are put with ``wait_s``: they wait for room, up to that long, instead of
overflowing a reader that keeps reading; a reader that takes nothing for ``wait_s`` is
closed 4408 like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from streaming.ratelimit import utf8_size

log = logging.getLogger(__name__)

#: Scope extension: a callable returning the bytes the server holds for this socket.
BUFFER_EXTENSION = "streamer.output_buffer"
#: How often a frame waiting for room re-reads a server's own buffer (daphne), which
#: says nothing when it drains.
SERVER_BUFFER_POLL_S = 0.005


def server_buffer_probe(scope: dict) -> Callable[[], int] | None:
    """The server's own count of unsent bytes for this socket, when it offers one."""
    probe = (scope.get("extensions") or {}).get(BUFFER_EXTENSION)
    return probe if callable(probe) else None


class Outbox:
    """A byte-bounded, order-keeping queue of text frames for one socket."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        *,
        limit: int,
        on_overflow: Callable[[], None],
        server_buffered: Callable[[], int] | None = None,
    ) -> None:
        self._send = send
        self.limit = limit
        self._on_overflow = on_overflow
        self._server_buffered = server_buffered
        self._queue: deque[tuple[str, int]] = deque()
        self.queued_bytes = 0
        self.closed = False
        self._writer: asyncio.Future[None] | None = None
        self._room = asyncio.Event()  # set each time the writer hands a frame over

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted for this client and not yet taken by the socket."""
        server = self._server_buffered() if self._server_buffered is not None else 0
        return self.queued_bytes + server

    async def put(self, text: str, wait_s: float = 0.0) -> bool:
        """Send ``text`` after everything queued before it. False when the outbox is
        closed or the frame would pass the limit, after waiting up to ``wait_s`` for
        room (then it overflows and closes).

        A frame larger than the limit still goes out when nothing else waits: the limit
        bounds a backlog, it does not cap frame sizes."""
        if self.closed:
            return False
        size = utf8_size(text)
        if not self._fits(size) and not await self._room_for(size, wait_s):
            if not self.closed:
                self.close()
                self._on_overflow()
            return False
        if self._server_buffered is not None:
            # The server never blocks on send and counts its own buffer (nothing queues).
            await self._send(text)
            return True
        self._queue.append((text, size))
        self.queued_bytes += size
        if self._writer is None:
            self._writer = start_eagerly(self._drain())
        return True

    def _fits(self, size: int) -> bool:
        pending = self.pending_bytes
        return not pending or pending + size <= self.limit

    async def _room_for(self, size: int, wait_s: float) -> bool:
        """Whether ``size`` more bytes fit after waiting up to ``wait_s`` for the client
        to take what waits before them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not self.closed and (left := deadline - loop.time()) > 0:
            self._room.clear()
            wait = SERVER_BUFFER_POLL_S if self._server_buffered is not None else left
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), min(wait, left))
            if self._fits(size):
                return not self.closed
        return False

    async def _drain(self) -> None:
        try:
            while self._queue and not self.closed:
                text, size = self._queue[0]
                await self._send(text)
                # Counted until the server took it: a send blocked on a slow client is
                # still waiting for it.
                self._queue.popleft()
                self.queued_bytes -= size
                self._room.set()
        except Exception:  # the socket went away under the send: nothing more to do
            log.debug("output writer stopped", exc_info=True)
            self.close()
        finally:
            self._writer = None

    def close(self) -> None:
        """Accept nothing more and drop what waits (nothing durable: the client resumes
        from storage after reconnecting). Stops a writer blocked on a slow socket."""
        self.closed = True
        self._queue.clear()
        self.queued_bytes = 0
        self._room.set()  # a frame waiting for room gives up at once
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None] | None:
    """Run ``coro`` now up to its first real wait, then on in a task; None when it
    finished without waiting (what Python 3.12's eager tasks do).

    The writer of a socket that takes its frame at once (the usual case: the server's
    send waits only while the client does not read) so sends it in the caller's step,
    without a task and a loop turn of its own: full-stack ``echo`` p50 0.117 → 0.110 ms
    (the benchmark's echo rounds, 2026-11-28)."""
    try:
        awaited = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_resume(coro, _taken(awaited)))


def _taken(awaited: Any) -> Any:
    """What a task does with a future its coroutine yields: mark it taken, so that it can
    be awaited (asyncio refuses to await a future still marked as being yielded)."""
    if getattr(awaited, "_asyncio_future_blocking", False):
        awaited._asyncio_future_blocking = False
    return awaited


async def _resume(coro: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive a coroutine started by hand from the future it waits on, as a task would:
    it sees that future's outcome when resumed, and this task's cancellation."""
    while True:
        try:
            if awaited is None:  # a bare yield: give the loop one turn
                await asyncio.sleep(0)
            else:
                with contextlib.suppress(Exception):  # the coroutine reads it itself
                    await awaited
        except asyncio.CancelledError:
            try:  # its clean-up runs; it ends (or, having caught it, waits again)
                awaited = _taken(coro.throw(asyncio.CancelledError()))
            except StopIteration:
                return
            continue
        try:
            awaited = _taken(coro.send(None))
        except StopIteration:
            return
