"""generate_report: its payload and its handler run directly with a JobContext."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from pydantic import ValidationError

from protocol.errors import ProtocolError
from storage.connection import ConnectionInfo, connection_store
from storage.requests import RequestKey, request_store
from streaming.actions.registry import registry
from streaming.actions.report import ReportPayload, _percentile, generate_report
from streaming.jobs import JobCancelled, JobContext
from streaming.progress import ProgressReporter

pytestmark = pytest.mark.usefixtures("asgi_settings")

T0 = 1_700_000_000_000


# --- payload ----------------------------------------------------------------------------


def test_report_is_a_registered_async_action() -> None:
    spec = registry.get("generate_report")
    assert spec.mode == "async"
    assert spec.schema is ReportPayload
    assert spec.timeout_s >= 600, "a 600 s report must not time out"


def test_empty_payload_has_defaults() -> None:
    payload = ReportPayload.model_validate({})
    assert 0 <= payload.duration_s <= 600
    assert payload.steps >= 1
    assert payload.max_requests > 0
    assert payload.include_connections is True


@pytest.mark.parametrize("duration", [0, 0.5, 1, 599.9, 600])
def test_duration_bounds_accepted(duration) -> None:
    assert ReportPayload.model_validate({"duration_s": duration}).duration_s == duration


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"duration_s": -0.1}, ["payload.duration_s"]),
        ({"duration_s": 600.01}, ["payload.duration_s"]),
        ({"duration_s": "ten"}, ["payload.duration_s"]),
        ({"duration_s": None}, ["payload.duration_s"]),
        ({"unknown": 1}, ["payload.unknown"]),
        ({"Duration_s": 1}, ["payload.Duration_s"]),
        ({"steps": 0}, ["payload.steps"]),
        ({"steps": 1001}, ["payload.steps"]),
        ({"max_requests": -1}, ["payload.max_requests"]),
        ({"duration_s": 700, "x": 1}, ["payload.duration_s", "payload.x"]),
    ],
)
def test_invalid_payloads_list_every_field(payload, fields) -> None:
    with pytest.raises(ValidationError):
        ReportPayload.model_validate(payload)
    with pytest.raises(ProtocolError) as info:
        registry.get("generate_report").validate(payload)
    error = info.value
    assert error.code.value == "VALIDATION_ERROR"
    assert sorted(e["field"] for e in error.details["errors"]) == sorted(fields)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, None), ([2.0], 95, 2.0), ([3.0, 5.0], 50, 4.0), ([3.0, 5.0], 95, 4.9)],
)
def test_percentile(values, q, expected) -> None:
    result = _percentile(values, q)
    assert result == pytest.approx(expected) if expected is not None else result is None


# --- running the handler ----------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str, dict | None]] = []

    async def __call__(self, percentage: float, message: str, details: dict | None) -> None:
        self.calls.append((percentage, message, details))


def make_job(request_id: str = "rep", user: str = "alice") -> tuple[JobContext, Sink, Sink]:
    published, persisted = Sink(), Sink()
    reporter = ProgressReporter(
        asyncio.get_running_loop(), published, persisted, frames_per_s=10_000, writes_per_s=1
    )
    job = JobContext(
        request_id=request_id,
        tenant_id="acme",
        user_id=user,
        action="generate_report",
        attempt=1,
        reporter=reporter,
    )
    return job, published, persisted


def _enqueue(rid: str, at: int, *, user: str = "alice", action: str = "job.x", tenant="acme"):
    request_store.enqueue(
        tenant_id=tenant, user_id=user, request_id=rid, action=action, payload={}, now=at
    )
    return RequestKey(tenant, user, rid)


@pytest.fixture
def activity(ddb) -> None:
    """Alice: 2 completed (3 s and 5 s end to end, waited 1 s and 2 s), 1 failed (waited
    0.5 s), 1 pending, 1 cancelled, and the report request itself; plus Bob's request, a
    globex alice's, and connections."""
    k = _enqueue("c1", T0)
    request_store.claim(k, "w", 60_000, now=T0 + 1000)
    request_store.complete(k, {"ok": 1}, now=T0 + 3000)
    k = _enqueue("c2", T0 + 100)
    request_store.claim(k, "w", 60_000, now=T0 + 2100)
    request_store.complete(k, {"ok": 2}, now=T0 + 5100)
    k = _enqueue("f1", T0 + 200)
    request_store.claim(k, "w", 60_000, now=T0 + 700)
    request_store.fail(k, "PROCESSING_FAILED", "no", now=T0 + 900)
    _enqueue("p1", T0 + 300, action="job.y")
    request_store.cancel(_enqueue("x1", T0 + 400))
    _enqueue("rep", T0 + 500, action="generate_report")
    _enqueue("b1", T0, user="bob")
    _enqueue("g1", T0, tenant="globex")
    for cid, transport, user in [
        ("k1", "channels", "alice"),
        ("k2", "apigw", "alice"),
        ("k3", "channels", "bob"),
    ]:
        connection_store.save(
            ConnectionInfo(
                connection_id=cid,
                tenant_id="acme",
                user_id=user,
                transport=transport,
                address=f"addr-{cid}",
            )
        )


async def run(job: JobContext, **options) -> dict:
    result = await generate_report(job, ReportPayload.model_validate(options))
    await job.reporter.close()
    return result


@pytest.mark.parametrize(
    "options",
    [
        {"duration_s": 0},
        {"duration_s": 0, "steps": 1},
        {"duration_s": 0, "steps": 3},
        {"duration_s": 0, "steps": 50},
        {"duration_s": 0, "max_requests": 5, "steps": 2},
    ],
)
async def test_report_counts_own_requests(activity, options) -> None:
    job, _, _ = make_job()
    result = await run(job, **options)
    requests = result["requests"]
    assert requests["total"] == 5, "own requests only, the report itself excluded"
    assert requests["by_status"] == {"COMPLETED": 2, "FAILED": 1, "PENDING": 1, "CANCELLED": 1}
    assert requests["by_action"] == {"job.x": 4, "job.y": 1}
    assert requests["completion_s"]["p50"] == pytest.approx(4.0)
    assert requests["completion_s"]["p95"] == pytest.approx(4.9)
    assert requests["queue_wait_s"]["p50"] == pytest.approx(1.0)
    assert result["connections"] == {"open": 2, "transports": {"channels": 1, "apigw": 1}}
    assert result["steps"] == options.get("steps", 20)
    assert isinstance(result["generated_at"], int)
    # the result is stored as JSON by the worker: it must encode without options
    assert orjson.loads(orjson.dumps(result)) == result
    request_store.claim(RequestKey("acme", "alice", "rep"), "w", 60_000)
    stored = request_store.complete(RequestKey("acme", "alice", "rep"), result)
    assert stored.result == result


async def test_report_limits_and_options(activity) -> None:
    job, _, _ = make_job()
    result = await run(job, duration_s=0, max_requests=2, include_connections=False)
    assert result["requests"]["total"] == 2
    assert result["connections"] == {"open": 0, "transports": {}}
    job, _, _ = make_job()
    result = await run(job, duration_s=0, max_requests=0)
    assert result["requests"]["total"] == 0
    assert result["requests"]["completion_s"] == {"p50": None, "p95": None}


async def test_report_reads_every_page(ddb) -> None:
    """More history than one page per step: every request is still counted."""
    for i in range(130):
        _enqueue(f"r{i:03}", T0 + i)
    for steps in (1, 2, 20):
        job, _, _ = make_job()
        result = await run(job, duration_s=0, steps=steps)
        assert result["requests"]["total"] == 130, f"steps={steps}"


async def test_report_for_user_without_history(ddb) -> None:
    job, published, _ = make_job(user="nobody")
    result = await run(job, duration_s=0, steps=4)
    assert result["requests"]["total"] == 0
    assert result["requests"]["by_status"] == {}
    assert result["connections"]["open"] == 0
    assert [p for p, _, _ in published.calls][-1] == 100


async def test_report_progress(activity) -> None:
    job, published, _ = make_job()
    await run(job, duration_s=0, steps=5)
    percentages = [p for p, _, _ in published.calls]
    assert percentages, "progress was reported"
    assert percentages == sorted(percentages), "never decreasing"
    assert percentages[0] > 0 and percentages[-1] == 100
    assert job.reporter.reports == 5
    for _, message, details in published.calls:
        assert isinstance(message, str) and message
        assert details["steps"] == 5 and 1 <= details["step"] <= 5


async def test_report_paces_over_duration(ddb) -> None:
    job, published, _ = make_job()
    started = time.monotonic()
    result = await run(job, duration_s=0.4, steps=4)
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 3
    assert result["duration_s"] == pytest.approx(elapsed, abs=0.1)
    assert len(published.calls) >= 2, "progress arrives while the report runs"


async def test_cancelled_before_start(activity) -> None:
    job, published, _ = make_job()
    job.cancelled.set()
    with pytest.raises(JobCancelled):
        await generate_report(job, ReportPayload(duration_s=0))
    await job.reporter.close()
    assert published.calls == []


async def test_cancelled_while_running(ddb) -> None:
    job, published, _ = make_job()
    task = asyncio.create_task(generate_report(job, ReportPayload(duration_s=1, steps=10)))
    await asyncio.sleep(0.25)
    assert not task.done()
    job.cancelled.set()
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        await task
    assert time.monotonic() - started < 1, "stops at its next step (0.1 s apart)"
    await job.reporter.close()
    percentages = [p for p, _, _ in published.calls]
    assert percentages and max(percentages) < 100


@pytest.mark.parametrize(
    ("options", "at_least"),
    [
        ({"duration_s": 0, "steps": 1}, 1),
        ({"duration_s": 0, "steps": 4}, 4),
        ({"duration_s": 2.5, "steps": 1}, 3),  # one chunk per second of a long step
        ({"duration_s": 2, "steps": 4}, 4),
    ],
)
async def test_report_writes_what_it_finds(activity, options, at_least) -> None:
    job, _, _ = make_job()
    result = await run(job, **options)
    assert len(job.written) >= max(at_least, options["duration_s"])
    steps = [c for c in job.written if "step" in c]
    assert [c["step"] for c in steps] == sorted(c["step"] for c in steps)
    assert steps[-1]["read"] == 5 and steps[-1]["by_status"] == result["requests"]["by_status"]
    assert all(isinstance(c["line"], str) and c["line"] for c in job.written)
    assert job.written[-2]["by_action"] == {"job.x": 4, "job.y": 1}
    assert job.written[-1]["connections"] == 2
    orjson.dumps(job.written)  # every chunk is JSON
