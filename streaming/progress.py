"""Progress coalescing: a handler may report as often as it likes; clients get at most
``frames_per_s`` frames per request and DynamoDB at most ``writes_per_s`` writes, the
latest value winning. Percentages are clamped to 0–100 and never go down. ``close()``
flushes the last pending frame, so 100 % is never lost before the terminal frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Update = tuple[float, str, dict[str, Any] | None]
Sink = Callable[[float, str, dict[str, Any] | None], Awaitable[None]]


class ProgressReporter:
    """Thread-safe: ``report`` may be called from the event loop or a handler thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        publish: Sink,
        persist: Sink,
        *,
        frames_per_s: float = 10,
        writes_per_s: float = 1,
        initial: float = 0.0,
    ) -> None:
        self._loop = loop
        self._publish = publish
        self._persist = persist
        self._frame_interval = 1.0 / frames_per_s
        self._write_interval = 1.0 / writes_per_s
        self._lock = threading.Lock()
        self._percentage = min(100.0, max(0.0, float(initial)))  # a retry resumes here
        self._frame: Update | None = None
        self._write: Update | None = None
        self._next_frame_at = 0.0
        self._next_write_at = time.monotonic() + self._write_interval
        self._task: asyncio.Task[None] | None = None
        self._scheduled = False
        self._closing = False
        self._wakeup = asyncio.Event()
        self.reports = 0
        self.frames_sent = 0
        self.writes_made = 0

    @property
    def percentage(self) -> float:
        """The highest percentage reported so far."""
        return self._percentage

    def unsaved(self) -> Update | None:
        """The latest update not persisted yet (None when storage has the latest)."""
        with self._lock:
            return self._write

    def report(
        self, percentage: float, message: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """Record an update; delivery happens later, coalesced."""
        try:
            value = float(percentage)
        except (TypeError, ValueError):
            value = self._percentage
        if value != value:  # NaN
            value = self._percentage
        with self._lock:
            self.reports += 1
            value = min(100.0, max(value, 0.0, self._percentage))
            self._percentage = value
            update = (value, str(message)[:1024], details)
            fresh_frame = self._frame is None
            self._frame = update
            self._write = update
            if self._closing:
                return
            if self._scheduled:
                # The drain may be asleep waiting for a write slot: a newly pending frame
                # wakes it (once per frame, not once per report).
                if fresh_frame:
                    self._loop.call_soon_threadsafe(self._wakeup.set)
                return
            self._scheduled = True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._start()
        else:
            self._loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._drain())
        else:
            self._wakeup.set()

    async def _drain(self) -> None:
        while True:
            with self._lock:
                frame, write = self._frame, self._write
                if self._closing or (frame is None and write is None):
                    self._scheduled = False
                    return
            now = time.monotonic()
            if frame is not None and now >= self._next_frame_at:
                with self._lock:
                    frame, self._frame = self._frame, None
                self._next_frame_at = now + self._frame_interval
                if frame is not None:
                    await self._send(frame)
                continue
            if write is not None and now >= self._next_write_at:
                with self._lock:
                    write, self._write = self._write, None
                self._next_write_at = now + self._write_interval
                if write is not None:
                    await self._store(write)
                continue
            due = [t for t, p in ((self._next_frame_at, frame), (self._next_write_at, write)) if p]
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, min(due) - now))

    async def _send(self, update: Update) -> None:
        self.frames_sent += 1
        try:
            await self._publish(*update)
        except Exception:
            log.warning("progress frame not delivered", exc_info=True)

    async def _store(self, update: Update) -> None:
        self.writes_made += 1
        try:
            await self._persist(*update)
        except Exception:
            log.warning("progress not persisted", exc_info=True)

    async def close(self, *, flush: bool = True) -> None:
        """Stop; with ``flush``, send the last pending frame right away (never dropped)."""
        with self._lock:
            self._closing = True
            frame, self._frame = self._frame, None
        self._wakeup.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if flush and frame is not None:
            await self._send(frame)
