"""Endpoints the benchmark compares against (enabled only with ``STREAMER_BENCH=1``).

* ``/bench/echo``: a bare Channels echo consumer — the baseline our full ``echo`` path
  is measured against, on the same daphne.
* ``bench.noop`` (async, does nothing) and ``bench.flood`` (reports progress in a tight
  loop) to measure the queue and the progress coalescing.
* ``bench.output`` writes ``chunks`` output chunks of ``chunk_bytes`` characters, in a
  burst or one every ``pace_ms``, to measure output streams (``bench/output_stream.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from pydantic import BaseModel, Field

from streaming.actions.registry import action
from streaming.jobs import JobContext


class BareEchoConsumer(AsyncWebsocketConsumer):
    """Accepts anyone and echoes every text frame back."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data, bytes_data=bytes_data)


class FloodPayload(BaseModel):
    reports: int = Field(default=100_000, ge=1, le=1_000_000)
    sustain_s: float = Field(default=0.0, ge=0, le=30)


class OutputPayload(BaseModel):
    chunks: int = Field(default=1000, ge=0, le=1_000_000)
    chunk_bytes: int = Field(default=16, ge=1, le=65_534)  # 64 KiB as JSON at most
    pace_ms: float = Field(default=0.0, ge=0, le=1000)
    write: bool = True  # False: the same run without output (the writes it costs anyway)


def register() -> None:
    """Declare the benchmark actions (called from AppConfig.ready when enabled)."""

    @action("bench.noop", mode="async")
    async def noop(job: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    @action("bench.flood", mode="async", schema=FloodPayload, timeout_s=300)
    def flood(job: JobContext, payload: FloodPayload) -> dict[str, Any]:
        cpu, wall = time.thread_time(), time.perf_counter()
        for i in range(payload.reports):
            job.report(i * 50 / payload.reports, "flooding")
        loop_cpu, loop_wall = time.thread_time() - cpu, time.perf_counter() - wall
        # Then keep flooding for sustain_s seconds, to measure the steady frame rate.
        sustained, deadline = 0, time.perf_counter() + payload.sustain_s
        while time.perf_counter() < deadline:
            for _ in range(1000):
                sustained += 1
                job.report(
                    50 + 49 * (1 - (deadline - time.perf_counter()) / (payload.sustain_s or 1)),
                    "sustained",
                )
        return {
            "reports": payload.reports,
            "handler_cpu_s": round(loop_cpu, 4),
            "handler_wall_s": round(loop_wall, 4),
            "sustained_reports": sustained,
            "frames_sent": job.reporter.frames_sent,
            "writes_made": job.reporter.writes_made,
        }

    @action("bench.output", mode="async", schema=OutputPayload, timeout_s=300)
    async def output(job: JobContext, payload: OutputPayload) -> dict[str, Any]:
        line = "x" * payload.chunk_bytes
        for i in range(payload.chunks):
            if payload.write:
                job.write(line)
            if payload.pace_ms:
                await asyncio.sleep(payload.pace_ms / 1000)  # the paced producer
            elif i % 1000 == 999:
                await asyncio.sleep(0)  # let the writer flush and send
        return {"chunks": payload.chunks if payload.write else 0}
