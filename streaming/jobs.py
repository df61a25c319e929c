"""What an asynchronous action handler gets: its request, a progress reporter and
cancellation."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from streaming.output import OutputWriter, check_chunk
from streaming.progress import ProgressReporter


class JobCancelled(Exception):
    """Raised inside a handler (from ``report``/``check``) once its request was cancelled
    or its time ran out; the worker sends nothing more for it."""


@dataclass
class JobContext:
    """Passed to async-mode handlers as their first argument."""

    request_id: str
    tenant_id: str
    user_id: str
    action: str
    attempt: int
    reporter: ProgressReporter
    metadata: dict[str, Any] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    output: OutputWriter | None = None
    # Without an output stream (a context built outside a worker) chunks are kept here.
    written: list[Any] = field(default_factory=list)

    def report(
        self, percentage: float, message: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """Report progress (cheap: coalesced, rate-limited). Raises JobCancelled once the
        request is cancelled, so a handler stops at its next report."""
        if self.cancelled.is_set():
            raise JobCancelled
        self.reporter.report(percentage, message, details)

    def write(self, data: str | dict[str, Any]) -> None:
        """Append a chunk (a string or a JSON object) to the request's output stream
        (cheap: buffered, stored and sent in batches, in order; all of it is stored
        before the terminal frame). Raises OutputTooLarge past 64 KiB per chunk or 8 MiB
        per request, TypeError for anything else than a string or JSON object, and
        JobCancelled once the request is cancelled."""
        self.check()
        if self.output is None:
            check_chunk(data)
            self.written.append(data)
        else:
            self.output.write(data)

    def check(self) -> None:
        """Raise JobCancelled if the request was cancelled."""
        if self.cancelled.is_set():
            raise JobCancelled

    async def sleep(self, seconds: float) -> None:
        """Wait (for pacing), then raise JobCancelled if the request was cancelled meanwhile
        (the worker also cancels the handler task, which ends the wait at once)."""
        if seconds > 0:
            await asyncio.sleep(seconds)
        self.check()
