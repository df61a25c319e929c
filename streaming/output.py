"""A handler's output stream while it runs: ``JobContext.write`` buffers chunks, and
this writer stores them in batches (storage/requests/output.py) and then sends each as
an ``output`` frame.

* Cheap for the handler: ``write`` only encodes and appends to a buffer; a flush every
  ``flush_interval_s`` (or as soon as a page's worth is waiting) makes one storage round
  trip for the whole batch.
* Seqs are given at flush time, consecutively after the last stored chunk (read once,
  at the first flush of an attempt). A chunk is sent only after it is stored, so what a
  client saw is what a retry continues after: never a gap, never a repeated seq. A
  retry first sends the last RESENT_TAIL stored chunks again (those the stopped attempt
  stored but could not send); each connection's guard drops what it already had.
* ``close`` flushes what is left: the worker calls it before the terminal frame.
* Limits (docs/protocol.md §5): 64 KiB per chunk, 8 MiB per request (what earlier attempts
  stored counts): past them ``write`` raises :class:`OutputTooLarge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from storage.errors import StorageUnavailable, StoreError, ValidationError
from storage.requests.model import RequestKey
from storage.requests.output import (
    MAX_STREAM_BYTES,
    PAGE_BYTES,
    OutputConflict,
    OutputStore,
    encode_chunk,
    output_store,
)
from streaming.actions.registry import FinalError

#: Stored chunks kept for another publish attempt at most (older ones: after_seq).
MAX_UNSENT = 10_000
#: Chunks of an earlier attempt sent again before a retry's first chunk: those it stored
#: but could not publish before it stopped (connections' guards drop what they had).
RESENT_TAIL = 200

log = logging.getLogger(__name__)

Publish = Callable[[list[tuple[int, Any]]], Awaitable[None]]


class OutputTooLarge(FinalError):
    """A chunk or the whole stream passed its limit. Uncaught, it fails the request with
    PROCESSING_FAILED and this message; caught, the handler may go on without output."""


class OutputLost(Exception):
    """The stream was taken over by another writer (this worker lost the request)."""


def check_chunk(data: Any) -> bytes:
    """The chunk as stored; OutputTooLarge past 64 KiB, TypeError unless it is a string
    or a JSON object (what a handler gets for a bad chunk)."""
    try:
        return encode_chunk(data)
    except ValidationError as exc:
        if "at most" in str(exc):
            raise OutputTooLarge(str(exc)) from None
        raise TypeError(str(exc)) from None


class OutputWriter:
    """Thread-safe: ``write`` may be called from the event loop or a handler thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        key: RequestKey,
        publish: Publish,
        *,
        stored_bytes: int = 0,
        flush_interval_s: float = 0.1,
        store: OutputStore = output_store,
        max_bytes: int = MAX_STREAM_BYTES,
    ) -> None:
        self._loop = loop
        self._key = key
        self._publish = publish
        self._store = store
        self._interval = flush_interval_s
        self._failures = 0  # flushes in a row that storage refused
        # Stored chunks whose publish failed (subscriber lookup or channel layer out of
        # reach): sent again, oldest first, before anything newer.
        self._unsent: list[tuple[int, Any]] = []
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._total_bytes = stored_bytes
        self._last_seq: int | None = None  # unknown until the first flush reads it
        self._flushing = asyncio.Lock()
        self._sending = asyncio.Lock()  # publishes go out one at a time, oldest first
        self._task: asyncio.Task[None] | None = None
        self._scheduled = False
        self._urgent = asyncio.Event()
        self._closed = False
        self.lost = False
        self.writes_made = 0

    @property
    def last_seq(self) -> int:
        """The seq of the last chunk stored by this writer or before it (0: none)."""
        return self._last_seq or 0

    def write(self, data: Any) -> None:
        """Buffer one chunk (a string or a JSON object) for the next flush."""
        encoded = check_chunk(data)
        with self._lock:
            if self.lost or self._closed:
                return
            if self._total_bytes + len(encoded) > self._max_bytes:
                raise OutputTooLarge(f"the output of a request is at most {self._max_bytes} bytes")
            self._total_bytes += len(encoded)
            self._pending.append(encoded)
            self._pending_bytes += len(encoded)
            urgent = self._pending_bytes >= PAGE_BYTES
            start = not self._scheduled
            self._scheduled = True
        if not (start or urgent):
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake(start)
        else:
            self._loop.call_soon_threadsafe(self._wake, start)

    def _wake(self, start: bool) -> None:
        if start and (self._task is None or self._task.done()):
            self._task = self._loop.create_task(self._drain())
        else:  # a page is waiting: the sleeping drain flushes at once
            self._urgent.set()

    async def _drain(self) -> None:
        """Flush every ``flush_interval_s`` while chunks keep coming (a running flush is
        never cancelled: its seqs must be known when the next one starts)."""
        while True:
            with self._lock:
                if not self._pending:
                    self._scheduled = False
                    return
                urgent = self._closed or self._pending_bytes >= PAGE_BYTES
            if not urgent:
                self._urgent.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self._interval)
            if not await self.flush():
                if self._closed:
                    return  # close() makes the last attempts and says what failed
                # Storage out of reach: the chunks wait in the buffer; back off so that an
                # outage does not become a busy loop of failing writes.
                await asyncio.sleep(min(2.0, self._interval * 2 ** min(self._failures, 5)))

    async def flush(self) -> bool:
        """Store what is buffered, then send it (after anything stored but not sent yet).
        Storage failures are logged and the chunks kept for the next flush (False is
        returned); a takeover by another writer drops them."""
        async with self._flushing:
            with self._lock:
                batch, self._pending, self._pending_bytes = self._pending, [], 0
            if self.lost:
                return True
            if batch:
                try:
                    if self._last_seq is None:
                        self._last_seq = await asyncio.to_thread(self._store.last_seq, self._key)
                        if self._last_seq:  # a retry: what the stopped attempt left unsent
                            self._unsent[:0] = await asyncio.to_thread(
                                self._store.read_after,
                                self._key,
                                max(0, self._last_seq - RESENT_TAIL),
                            )
                    first = self._last_seq + 1
                    self.writes_made += await asyncio.to_thread(
                        self._store.append, self._key, first, batch
                    )
                except OutputConflict:
                    log.warning("output of %s continued by another writer", self._key.request_id)
                    self.lost = True
                    return True
                except StoreError:
                    self._failures += 1
                    log.warning(
                        "output of %s not stored yet (attempt %d)",
                        self._key.request_id,
                        self._failures,
                        exc_info=self._failures == 1,
                    )
                    with self._lock:
                        self._pending[:0] = batch
                        self._pending_bytes += sum(len(c) for c in batch)
                    return False
                self._failures = 0
                self._last_seq = first + len(batch) - 1
                self._unsent += [(first + i, orjson.loads(c)) for i, c in enumerate(batch)]
        await self._resend()
        return True

    async def _resend(self) -> None:
        """Publish what is stored and not sent yet, oldest first. A failed publish is
        tried again at the next flush and at close (before the terminal frame), so a
        subscribed socket sees no gap; each connection's guard drops what it already
        had. Past MAX_UNSENT chunks the oldest are left to ``after_seq`` resumption.
        One publish at a time: a later batch never overtakes an earlier one."""
        async with self._sending:
            if not self._unsent:
                return
            chunks, self._unsent = self._unsent, []
            try:
                await self._publish(chunks)
            except Exception:
                log.warning("output frames not delivered yet", exc_info=True)
                self._unsent = [*chunks, *self._unsent][-MAX_UNSENT:]

    async def close(self, *, flush: bool = True) -> None:
        """Stop taking chunks and wait for a flush under way; with ``flush``, store and
        send what is buffered first, else drop it. Raises OutputLost when another writer
        took the stream over (the request is not ours any more), StorageUnavailable when
        written chunks could not be stored (no terminal frame may go out then)."""
        with self._lock:
            self._closed = True
            if not flush:
                self._pending, self._pending_bytes = [], 0
        self._urgent.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if flush and not await self.flush():
            await self.flush()  # one more try after a storage hiccup
        if self.lost:
            raise OutputLost(self._key.request_id)
        if flush and self._pending:
            # No terminal frame may go out before every written chunk is stored: the
            # request ends like any other storage outage (its lease lets a retry finish
            # it, continuing after the last stored seq).
            raise StorageUnavailable("output not stored")
