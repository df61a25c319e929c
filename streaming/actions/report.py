"""``generate_report``: a real report on the caller's own activity.

It reads the caller's request history (every page of ``request.list``) and live
connections, and computes counts by status and action, completion latencies (p50/p95)
and queue waits. The work is split into steps reported as progress; ``duration_s``
paces the steps over about that many seconds so clients can watch, cancel and resume.

As it goes it writes what it finds to its output stream (docs/protocol.md 1.1): one chunk
per step with the requests read so far, one per second of pacing with the running
totals, and the findings at the end: at least one chunk in all and at least one per
second of ``duration_s``. A retry writes its own chunks after the earlier attempt's.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connections.storage_pool import run_storage
from storage.connection import connection_store
from storage.requests.model import RequestRecord
from storage.requests.store import request_store
from streaming.actions.registry import action
from streaming.jobs import JobContext


class ReportPayload(BaseModel):
    """Options of generate_report; ``{}`` is valid."""

    model_config = ConfigDict(extra="forbid")
    duration_s: float = Field(default=2.0, ge=0, le=600)
    steps: int = Field(default=20, ge=1, le=1000)
    max_requests: int = Field(default=1000, ge=0, le=10_000)
    include_connections: bool = True


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _finding(step: int, steps: int, records: list[RequestRecord]) -> dict[str, Any]:
    """One output chunk: what the report has read so far, by status."""
    by_status = Counter(r.status.value for r in records)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items())) or "none"
    return {
        "line": f"step {step}/{steps}: {len(records)} requests read ({counts})",
        "step": step,
        "read": len(records),
        "by_status": dict(by_status),
    }


async def _paced(
    job: JobContext, until: float, step: int, steps: int, records: list[RequestRecord]
) -> None:
    """Wait until ``until`` (monotonic), writing the running totals once a second."""
    while (left := until - time.monotonic()) > 1.0:
        await job.sleep(1.0)
        job.write(_finding(step, steps, records))
    await job.sleep(left)


@action("generate_report", mode="async", schema=ReportPayload, timeout_s=900, max_attempts=3)
async def generate_report(job: JobContext, payload: ReportPayload) -> dict[str, Any]:
    """Statistics of the caller's requests and connections, with real progress."""
    started = time.monotonic()
    steps = payload.steps
    step_s = payload.duration_s / steps
    page_size = max(1, min(100, -(-payload.max_requests // steps)))
    records: list[RequestRecord] = []
    cursor: str | None = None
    more = payload.max_requests > 0
    for step in range(1, steps + 1):
        # Each step reads one page of history while there is one (the last step reads
        # whatever is left, up to max_requests); the pacing spreads the steps over
        # duration_s.
        while more:
            page = await run_storage(
                request_store.list_by_user,
                job.tenant_id,
                job.user_id,
                limit=page_size,
                cursor=cursor,
            )
            records.extend(r for r in page.items if r.request_id != job.request_id)
            cursor = page.cursor
            more = cursor is not None and len(records) < payload.max_requests
            if step < steps:
                break
        message = f"Read {len(records)} requests" if step < steps else "Computing statistics"
        job.report(step * 100 / steps, message, {"step": step, "steps": steps})
        job.write(_finding(step, steps, records))
        await _paced(job, started + step * step_s, step, steps, records)
    records = records[: payload.max_requests]

    connections = []
    if payload.include_connections:
        connections = await run_storage(
            lambda: list(connection_store.iter_by_user(job.tenant_id, job.user_id))
        )

    by_status = Counter(r.status.value for r in records)  # str keys: stored as JSON
    by_action = Counter(r.action for r in records)
    latencies = sorted(
        (r.ended_at - r.created_at) / 1000
        for r in records
        if r.ended_at and r.status == "COMPLETED"
    )
    waits = sorted((r.started_at - r.created_at) / 1000 for r in records if r.started_at)
    job.write(
        {
            "line": f"{len(records)} requests by action: "
            + (", ".join(f"{a} {n}" for a, n in by_action.most_common()) or "none"),
            "by_action": dict(by_action),
        }
    )
    job.write({"line": f"{len(connections)} open connections", "connections": len(connections)})
    return {
        "generated_at": int(time.time() * 1000),
        "requests": {
            "total": len(records),
            "by_status": dict(by_status),
            "by_action": dict(by_action),
            "completion_s": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95)},
            "queue_wait_s": {"p50": _percentile(waits, 50), "p95": _percentile(waits, 95)},
        },
        "connections": {
            "open": len(connections),
            "transports": dict(Counter(c.transport for c in connections)),
        },
        "steps": steps,
        "duration_s": round(time.monotonic() - started, 3),
    }
