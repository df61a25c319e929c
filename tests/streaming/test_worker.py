"""The worker end to end in one process: moto for storage, the in-memory channel layer
for wake-ups, cancel notifications and delivery to a fake socket."""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
from collections.abc import Collection
from types import SimpleNamespace
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer
from pydantic import BaseModel

from protocol import frames
from protocol.errors import ErrorCode, ProtocolError
from storage.base import now_ms
from storage.errors import StorageUnavailable
from storage.requests.model import DEFAULT_SHARDS, RequestKey, RequestRecord, RequestStatus
from storage.requests.store import RequestStore
from streaming.actions.builtin import RequestRef, request_cancel
from streaming.actions.registry import ActionRegistry, FinalError, RetryableError, action
from streaming.lifecycle import WAKE_CHANNEL, notify_cancelled, send_terminal
from streaming.worker import Worker, default_worker_id, retry_delay_s
from tests.support.worker import (
    TENANT,
    FakeSocket,
    check_stream,
    eventually,
    running,
    set_max_running,
    submit,
)

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")

S = RequestStatus


class RecordingStore(RequestStore):
    """The real store, remembering what the worker did with it."""

    def __init__(self, failures: dict[str, int] | None = None) -> None:
        self.lock = threading.Lock()
        self.polls = 0
        self.listed: set[str] = set()
        self.claims: list[tuple[RequestRecord, str, bool]] = []  # record, worker, was listed
        self.retries: list[RequestRecord] = []
        self.failures = collections.Counter(failures or {})

    def _maybe_fail(self, operation: str) -> None:
        with self.lock:
            if self.failures[operation] > 0:
                self.failures[operation] -= 1
                raise StorageUnavailable(f"injected outage of {operation}")

    def list_due(
        self,
        now: int | None = None,
        limit: int = 100,
        shards: int = DEFAULT_SHARDS,
        exclude_tenants: Collection[str] = (),
    ) -> list[RequestRecord]:
        self._maybe_fail("list_due")
        due = super().list_due(now, limit, shards, exclude_tenants)
        with self.lock:
            self.polls += 1
            self.listed.update(r.key.as_string() for r in due)
        return due

    def claim(
        self, key: RequestKey, worker_id: str, lease_ms: int, now: int | None = None
    ) -> RequestRecord | None:
        self._maybe_fail("claim")
        with self.lock:
            was_listed = key.as_string() in self.listed
        record = super().claim(key, worker_id, lease_ms, now)
        if record is not None:
            with self.lock:
                self.claims.append((record, worker_id, was_listed))
        return record

    def renew_lease(self, *args: Any, **kwargs: Any) -> RequestRecord:
        self._maybe_fail("renew_lease")
        return super().renew_lease(*args, **kwargs)

    def schedule_retry(self, *args: Any, **kwargs: Any) -> RequestRecord:
        record = super().schedule_retry(*args, **kwargs)
        with self.lock:
            self.retries.append(record)
        return record


@pytest.fixture
def rstore(store: RequestStore) -> RecordingStore:
    return RecordingStore()


def make_worker(store: RequestStore, actions: ActionRegistry, **overrides: Any) -> Worker:
    options: dict[str, Any] = {
        "concurrency": 4,
        "lease_s": 30.0,
        "poll_interval_s": 0.05,
        "shards": 1,
        "grace_s": 5.0,
        "retry_base_s": 0.01,
    }
    options.update(overrides)
    return Worker(store=store, actions=actions, **options)


async def stored(store: RequestStore, record: RequestRecord) -> RequestRecord:
    return await asyncio.to_thread(store.get, record.key)


async def first_progress_above(sock: FakeSocket, request_id: str, floor: float) -> None:
    while not any(
        f["type"] == "progress" and f["percentage"] > floor for f in sock.about(request_id)
    ):
        await sock.next_frame()


# --- the happy path ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_request_streams_progress_then_one_complete(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any, kind: str
) -> None:
    handler_threads: list[int] = []

    if kind == "sync":

        @action("t.work", mode="async", registry=actions)
        def work(job: Any, payload: dict[str, Any]) -> dict[str, Any]:
            handler_threads.append(threading.get_ident())
            for p in (10, 40, 70):
                job.report(p, f"at {p}")
                time.sleep(0.12)
            return {"sum": payload["a"] + payload["b"], "attempt": job.attempt}

    else:

        @action("t.work", mode="async", registry=actions)
        async def work(job: Any, payload: dict[str, Any]) -> dict[str, Any]:
            handler_threads.append(threading.get_ident())
            for p in (10, 40, 70):
                job.report(p, f"at {p}")
                await asyncio.sleep(0.12)
            return {"sum": payload["a"] + payload["b"], "attempt": job.attempt}

    sock = await make_socket()
    worker = make_worker(rstore, actions)
    async with running(worker):
        record = await submit(sock, "t.work", {"a": 2, "b": 3}, metadata={"trace": "t-1"})
        await sock.until_terminal(record.request_id)
        await eventually(lambda: not worker.jobs, what="job finished")
        await sock.drain()

    terminal = check_stream(sock.about(record.request_id))
    assert terminal["type"] == "complete"
    assert terminal["success"] is True
    assert terminal["result"] == {"sum": 5, "attempt": 1}
    assert terminal["metadata"] == {"trace": "t-1"}
    progress = [f for f in sock.about(record.request_id) if f["type"] == "progress"]
    assert progress[-1]["percentage"] == 100
    assert {f["percentage"] for f in progress} <= {0, 10, 40, 70, 100}
    loop_thread = threading.get_ident()
    assert (handler_threads[0] != loop_thread) is (kind == "sync")

    final = await stored(rstore, record)
    assert final.status is S.COMPLETED
    assert final.result == {"sum": 5, "attempt": 1}
    assert final.percentage == 100
    assert final.attempts == 1
    assert final.lease_owner is None and final.due_at is None
    assert final.ended_at is not None and final.error is None
    assert worker.completed == 1


async def test_wake_up_claims_without_polling(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    @action("t.noop", mode="async", registry=actions)
    async def noop(job: Any, payload: dict[str, Any]) -> str:
        return "ok"

    sock = await make_socket()
    worker = make_worker(rstore, actions, poll_interval_s=60.0)
    async with running(worker):
        await eventually(lambda: rstore.polls >= 1, what="first poll")
        polls_before = rstore.polls
        record = await submit(sock, "t.noop", wake=True)
        await sock.until_terminal(record.request_id)
    assert [(r.request_id, listed) for r, _, listed in rstore.claims] == [
        (record.request_id, False)
    ], "claimed through a poll, not the wake-up"
    assert polls_before == 1  # only the poll at start, before the request existed
    assert check_stream(sock.about(record.request_id))["result"] == "ok"


async def test_polling_finds_a_request_nobody_announced(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    @action("t.noop", mode="async", registry=actions)
    def noop(job: Any, payload: dict[str, Any]) -> str:
        return "polled"

    sock = await make_socket()
    worker = make_worker(rstore, actions, poll_interval_s=0.05, shards=DEFAULT_SHARDS)
    async with running(worker):
        await eventually(lambda: rstore.polls >= 1, what="first poll")
        record = await submit(sock, "t.noop", wake=False, shards=DEFAULT_SHARDS)
        await sock.until_terminal(record.request_id)
    assert [(r.request_id, listed) for r, _, listed in rstore.claims] == [(record.request_id, True)]
    assert check_stream(sock.about(record.request_id))["result"] == "polled"


async def test_progress_is_persisted_while_the_handler_runs(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    release = asyncio.Event()

    @action("t.persist", mode="async", registry=actions)
    async def persist(job: Any, payload: dict[str, Any]) -> None:
        job.report(42, "halfway", {"rows": 7})
        await release.wait()

    sock = await make_socket()
    worker = make_worker(rstore, actions)
    async with running(worker):
        record = await submit(sock, "t.persist")

        async def persisted() -> RequestRecord | None:
            current = await stored(rstore, record)
            return current if current.percentage == 42 else None

        midway = await eventually(persisted, what="progress persisted")
        assert midway.status is S.PROCESSING
        assert (midway.message, midway.details) == ("halfway", {"rows": 7})
        release.set()
        await sock.until_terminal(record.request_id)
    terminal = check_stream(sock.about(record.request_id))
    assert terminal["type"] == "complete" and terminal["result"] is None
    final = await stored(rstore, record)
    assert (final.status, final.percentage, final.result) == (S.COMPLETED, 100, None)


# --- failures ----------------------------------------------------------------------------


class Strict(BaseModel):
    rows: int


@pytest.mark.parametrize(
    ("kind", "raised", "code", "message"),
    [
        (
            "sync",
            FinalError("The input file is empty"),
            "PROCESSING_FAILED",
            "The input file is empty",
        ),
        (
            "async",
            FinalError("The input file is empty"),
            "PROCESSING_FAILED",
            "The input file is empty",
        ),
        ("async", FinalError(), "PROCESSING_FAILED", "Processing failed"),
        (
            "sync",
            ValueError("password=hunter2 at db.internal:5432"),
            "INTERNAL_ERROR",
            "Internal error",
        ),
        ("async", KeyError("hunter2"), "INTERNAL_ERROR", "Internal error"),
        # The handler's own timeout (a socket, a driver) is not the request's time limit.
        ("sync", TimeoutError("read timed out"), "INTERNAL_ERROR", "Internal error"),
        ("async", TimeoutError("read timed out"), "INTERNAL_ERROR", "Internal error"),
        (
            "async",
            ProtocolError(ErrorCode.NOT_FOUND, "Input not found"),
            "PROCESSING_FAILED",
            "Input not found",
        ),
    ],
)
async def test_failures_end_with_one_error_frame(
    rstore: RecordingStore,
    actions: ActionRegistry,
    make_socket: Any,
    kind: str,
    raised: Exception,
    code: str,
    message: str,
) -> None:
    calls: list[int] = []

    if kind == "sync":

        @action("t.fail", mode="async", registry=actions)
        def fail(job: Any, payload: dict[str, Any]) -> None:
            calls.append(job.attempt)
            job.report(25, "started")
            raise raised

    else:

        @action("t.fail", mode="async", registry=actions)
        async def fail(job: Any, payload: dict[str, Any]) -> None:
            calls.append(job.attempt)
            job.report(25, "started")
            raise raised

    sock = await make_socket()
    worker = make_worker(rstore, actions)
    async with running(worker):
        record = await submit(sock, "t.fail", max_attempts=3)
        await sock.until_terminal(record.request_id)
        await eventually(lambda: not worker.jobs)
        await sock.drain()

    terminal = check_stream(sock.about(record.request_id))
    assert terminal["type"] == "error"
    assert terminal["error"] == {"code": code, "message": message, "retryable": False}
    assert calls == [1], "a non-retryable failure is not retried"
    for frame in sock.about(record.request_id):
        assert "hunter2" not in str(frame)
    final = await stored(rstore, record)
    assert final.status is S.FAILED
    assert final.error == {"code": code, "message": message}
    assert rstore.retries == []


async def test_a_stored_payload_the_schema_rejects_fails_the_request(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    @action("t.strict", mode="async", schema=Strict, registry=actions)
    async def strict(job: Any, payload: Strict) -> int:
        return payload.rows

    sock = await make_socket()
    async with running(make_worker(rstore, actions)):
        bad = await submit(sock, "t.strict", {"rows": "many"})
        good = await submit(sock, "t.strict", {"rows": "12"})
        await sock.until_terminal(bad.request_id)
        await sock.until_terminal(good.request_id)
    assert check_stream(sock.about(bad.request_id))["error"]["code"] == "PROCESSING_FAILED"
    assert check_stream(sock.about(good.request_id))["result"] == 12


async def test_unknown_action_in_a_stored_record_fails(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    sock = await make_socket()
    async with running(make_worker(rstore, actions)):
        record = await submit(sock, "gone.action")
        await sock.until_terminal(record.request_id)
    terminal = check_stream(sock.about(record.request_id))
    assert terminal["error"] == {
        "code": "PROCESSING_FAILED",
        "message": "This action is no longer available",
        "retryable": False,
    }
    assert (await stored(rstore, record)).status is S.FAILED


# --- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["RetryableError", "retry_on", "retry_on TimeoutError"])
async def test_a_retryable_failure_is_retried_then_succeeds(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any, failure: str
) -> None:
    attempts: list[int] = []

    errors = {
        "RetryableError": RetryableError("later"),
        "retry_on": ConnectionResetError(),
        "retry_on TimeoutError": TimeoutError("read timed out"),
    }

    @action("t.flaky", mode="async", registry=actions, retry_on=(ConnectionError, TimeoutError))
    async def flaky(job: Any, payload: dict[str, Any]) -> dict[str, int]:
        attempts.append(job.attempt)
        # Every attempt starts over: 10 %, then 35 %.
        job.report(10, f"attempt {job.attempt}")
        await asyncio.sleep(0.15)
        job.report(35)
        await asyncio.sleep(0.15)
        if job.attempt == 1:
            raise errors[failure]
        return {"attempt": job.attempt}

    sock = await make_socket()
    async with running(make_worker(rstore, actions, poll_interval_s=0.02)):
        record = await submit(sock, "t.flaky", max_attempts=3)
        await sock.until_terminal(record.request_id)
        await sock.drain()

    assert attempts == [1, 2]
    [retry] = rstore.retries
    assert retry.status is S.RETRYING
    assert retry.error == {"code": "PROCESSING_FAILED", "message": "Attempt failed; retrying"}
    assert retry.lease_owner is None
    terminal = check_stream(sock.about(record.request_id))  # progress never went down
    assert terminal["result"] == {"attempt": 2}
    final = await stored(rstore, record)
    assert (final.status, final.attempts) == (S.COMPLETED, 2)


async def test_retries_stop_after_the_last_attempt(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    attempts: list[int] = []

    @action("t.down", mode="async", registry=actions, retry_on=(TimeoutError,))
    def down(job: Any, payload: dict[str, Any]) -> None:
        attempts.append(job.attempt)
        raise RetryableError("still down")

    sock = await make_socket()
    async with running(make_worker(rstore, actions, poll_interval_s=0.02)):
        record = await submit(sock, "t.down", max_attempts=3)
        await sock.until_terminal(record.request_id)
        await sock.drain()
    assert attempts == [1, 2, 3]
    assert len(rstore.retries) == 2
    terminal = check_stream(sock.about(record.request_id))
    assert terminal["error"] == {
        "code": "PROCESSING_FAILED",
        "message": "The request failed after every attempt",
        "retryable": False,
    }
    assert (await stored(rstore, record)).status is S.FAILED


@pytest.mark.parametrize(
    ("attempt", "low", "high"), [(1, 0.5, 1.5), (2, 1.0, 3.0), (4, 4.0, 12.0), (20, 30.0, 90.0)]
)
def test_retry_delay_grows_exponentially_with_jitter_and_a_cap(
    attempt: int, low: float, high: float
) -> None:
    delays = [retry_delay_s(attempt, base_s=1.0, cap_s=60.0) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert len(set(delays)) > 1  # jittered


def test_default_worker_id_is_unique_per_worker() -> None:
    a, b = default_worker_id(), default_worker_id()
    assert a != b
    assert a.count(":") == 2
    assert Worker().worker_id != Worker().worker_id


# --- time limits and cancellation --------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_handler_past_its_time_limit_ends_with_timeout(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any, kind: str
) -> None:
    stopped = threading.Event()

    if kind == "sync":

        @action("t.slow", mode="async", registry=actions)
        def slow(job: Any, payload: dict[str, Any]) -> None:
            try:
                for i in range(100_000):
                    job.report(i / 1000)
                    time.sleep(0.005)
            finally:
                stopped.set()

    else:

        @action("t.slow", mode="async", registry=actions)
        async def slow(job: Any, payload: dict[str, Any]) -> None:
            try:
                job.report(1)
                await job.sleep(30)
            finally:
                stopped.set()

    sock = await make_socket()
    worker = make_worker(rstore, actions)
    async with running(worker):
        record = await submit(sock, "t.slow", timeout_s=0.3)
        await sock.until_terminal(record.request_id)
        await eventually(stopped.is_set, what="handler stopped")
        await eventually(lambda: not worker.jobs)
        await sock.drain()
    terminal = check_stream(sock.about(record.request_id))
    assert terminal["error"] == {
        "code": "TIMEOUT",
        "message": "The request ran past its time limit",
        "retryable": True,
    }
    final = await stored(rstore, record)
    assert final.status is S.FAILED and final.error["code"] == "TIMEOUT"


async def _cancel_like_request_cancel(sock: FakeSocket, record: RequestRecord) -> None:
    ctx = SimpleNamespace(tenant_id=TENANT, user_id=sock.user_id)
    public = await request_cancel(ctx, RequestRef(request_id=record.request_id))
    assert public["status"] == "CANCELLED"


async def _cancel_by_hand(sock: FakeSocket, record: RequestRecord) -> None:
    from storage.requests.store import request_store

    cancelled = await asyncio.to_thread(request_store.cancel, record.key)
    await notify_cancelled(record.key.as_string())
    await send_terminal(
        cancelled, frames.error(record.request_id, ErrorCode.CANCELLED, "Request cancelled")
    )


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("cancel", [_cancel_like_request_cancel, _cancel_by_hand])
async def test_cancel_while_running_stops_the_handler_and_ends_with_cancelled(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any, kind: str, cancel: Any
) -> None:
    stopped = threading.Event()
    calls: list[int] = []

    if kind == "sync":

        @action("t.long", mode="async", registry=actions)
        def long(job: Any, payload: dict[str, Any]) -> str:
            calls.append(job.attempt)
            try:
                for i in range(1, 100_000):
                    job.report(min(99, i / 10), "working")
                    time.sleep(0.003)
            finally:
                stopped.set()
            return "finished?"

    else:

        @action("t.long", mode="async", registry=actions)
        async def long(job: Any, payload: dict[str, Any]) -> str:
            calls.append(job.attempt)
            try:
                for i in range(1, 100_000):
                    job.report(min(99, i / 10), "working")
                    await job.sleep(0.003)
            finally:
                stopped.set()
            return "finished?"

    sock = await make_socket()
    worker = make_worker(rstore, actions)
    async with running(worker):
        record = await submit(sock, "t.long")
        await first_progress_above(sock, record.request_id, 0)
        await cancel(sock, record)
        await eventually(stopped.is_set, what="handler stopped")
        await eventually(lambda: not worker.jobs)
        await sock.drain(0.3)  # anything late (a progress frame) would show up here
    terminal = check_stream(sock.about(record.request_id))
    assert terminal["error"] == {
        "code": "CANCELLED",
        "message": "Request cancelled",
        "retryable": False,
    }
    assert calls == [1]
    final = await stored(rstore, record)
    assert final.status is S.CANCELLED and final.result is None


@pytest.mark.parametrize("noticed_by", ["lease renewal", "progress write"])
async def test_a_cancel_without_notification_is_noticed_by_the_worker(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any, noticed_by: str
) -> None:
    stopped = threading.Event()

    started = asyncio.Event()

    @action("t.long", mode="async", registry=actions)
    async def long(job: Any, payload: dict[str, Any]) -> None:
        started.set()
        try:
            for i in range(1, 100_000):
                if noticed_by == "progress write":
                    job.report(min(99, i / 10))
                await asyncio.sleep(0.01)
        finally:
            stopped.set()

    lease_s = 0.6 if noticed_by == "lease renewal" else 30.0
    sock = await make_socket()
    worker = make_worker(rstore, actions, lease_s=lease_s)
    async with running(worker):
        record = await submit(sock, "t.long")
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.to_thread(rstore.cancel, record.key)  # another process; no nudge
        await eventually(stopped.is_set, what="handler stopped")
        await eventually(lambda: not worker.jobs)
        await sock.drain()
    kinds = [f["type"] for f in sock.about(record.request_id)]
    assert "complete" not in kinds and "error" not in kinds  # the canceller sends the end
    assert (await stored(rstore, record)).status is S.CANCELLED


@pytest.mark.parametrize("outcome", ["returns", "raises FinalError", "raises RetryableError"])
async def test_a_handler_ending_after_its_request_was_cancelled_sends_nothing(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any, outcome: str
) -> None:
    go_on = threading.Event()

    @action("t.deaf", mode="async", registry=actions)
    def deaf(job: Any, payload: dict[str, Any]) -> str:
        go_on.wait(10)  # never looks at cancellation
        if outcome == "raises FinalError":
            raise FinalError("nope")
        if outcome == "raises RetryableError":
            raise RetryableError("later")
        return "done"

    sock = await make_socket()
    worker = make_worker(rstore, actions)
    async with running(worker):
        record = await submit(sock, "t.deaf")
        await eventually(lambda: worker.jobs, what="claimed")
        await asyncio.to_thread(rstore.cancel, record.key)
        go_on.set()
        await eventually(lambda: not worker.jobs)
        await sock.drain()
    kinds = [f["type"] for f in sock.about(record.request_id)]
    assert "complete" not in kinds and "error" not in kinds
    final = await stored(rstore, record)
    assert final.status is S.CANCELLED and final.result is None
    assert worker.completed == 0


# --- leases and reclaiming ---------------------------------------------------------------


async def test_a_dead_workers_request_is_reclaimed_after_its_lease(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    attempts: list[int] = []

    @action("t.job", mode="async", registry=actions)
    async def job(job: Any, payload: dict[str, Any]) -> str:
        attempts.append(job.attempt)
        return "rescued"

    sock = await make_socket()
    record = await submit(sock, "t.job", wake=False)
    dead = await asyncio.to_thread(rstore.claim, record.key, "dead-worker", 400)
    assert dead is not None and dead.lease_expires_at is not None
    worker = make_worker(rstore, actions, poll_interval_s=0.02)
    async with running(worker):
        await sock.until_terminal(record.request_id)
    assert attempts == [2]
    claimed = [(r, w) for r, w, _ in rstore.claims if w == worker.worker_id]
    [(mine, _)] = claimed
    assert mine.lease_expires_at - worker.lease_ms >= dead.lease_expires_at  # not before expiry
    assert check_stream(sock.about(record.request_id))["result"] == "rescued"
    final = await stored(rstore, record)
    assert (final.status, final.attempts, final.lease_owner) == (S.COMPLETED, 2, None)


async def test_a_reclaimed_request_past_its_attempts_fails(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    calls: list[int] = []

    @action("t.job", mode="async", registry=actions)
    async def job(job: Any, payload: dict[str, Any]) -> None:
        calls.append(job.attempt)

    sock = await make_socket()
    record = await submit(sock, "t.job", wake=False, max_attempts=1)
    assert await asyncio.to_thread(rstore.claim, record.key, "dead-worker", 50)
    async with running(make_worker(rstore, actions, poll_interval_s=0.02)):
        await sock.until_terminal(record.request_id)
    assert calls == []
    terminal = check_stream(sock.about(record.request_id))
    assert terminal["error"]["code"] == "PROCESSING_FAILED"
    assert terminal["error"]["message"] == "The request used up its attempts"
    final = await stored(rstore, record)
    assert (final.status, final.attempts) == (S.FAILED, 2)


async def test_two_workers_racing_run_each_request_exactly_once(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    runs: collections.Counter[str] = collections.Counter()

    @action("t.once", mode="async", registry=actions)
    async def once(job: Any, payload: dict[str, Any]) -> dict[str, Any]:
        runs[job.request_id] += 1
        job.report(50)
        await asyncio.sleep(0.01)
        return {"n": payload["n"]}

    sock = await make_socket()
    first = make_worker(rstore, actions, worker_id="w-1", poll_interval_s=0.03)
    second = make_worker(rstore, actions, worker_id="w-2", poll_interval_s=0.03)
    async with running(first, second):
        records = [await submit(sock, "t.once", {"n": n}) for n in range(50)]
        for record in records:
            await sock.until_terminal(record.request_id, within=30)
        await sock.drain()
    assert len(runs) == 50
    assert set(runs.values()) == {1}
    claimed = collections.Counter(r.request_id for r, _, _ in rstore.claims)
    assert set(claimed.values()) == {1} and len(claimed) == 50
    assert first.completed + second.completed == 50
    for n, record in enumerate(records):
        assert check_stream(sock.about(record.request_id))["result"] == {"n": n}


# --- concurrency ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_never_more_than_concurrency_handlers_at_once(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any, kind: str
) -> None:
    limit = 3
    lock = threading.Lock()
    active = 0
    peak = 0
    full = threading.Event()  # set once `limit` handlers ran at the same time

    def enter() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            if active >= limit:
                full.set()

    def leave() -> None:
        nonlocal active
        with lock:
            active -= 1

    if kind == "sync":

        @action("t.busy", mode="async", registry=actions)
        def busy(job: Any, payload: dict[str, Any]) -> None:
            enter()
            full.wait(10)  # hold the slot until the worker filled every slot
            time.sleep(0.05)
            leave()

    else:

        @action("t.busy", mode="async", registry=actions)
        async def busy(job: Any, payload: dict[str, Any]) -> None:
            enter()
            await asyncio.to_thread(full.wait, 10)
            await asyncio.sleep(0.05)
            leave()

    sock = await make_socket()
    records = [await submit(sock, "t.busy", wake=n % 2 == 0) for n in range(9)]
    await set_max_running(TENANT, limit)  # one tenant may fill every slot
    worker = make_worker(rstore, actions, concurrency=limit, poll_interval_s=0.02)
    async with running(worker):
        for record in records:
            await sock.until_terminal(record.request_id)
    assert full.is_set(), "the worker never ran `limit` handlers at once"
    assert peak == limit


async def test_sync_handlers_up_to_the_concurrency_all_run_at_once(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    """Blocking handlers must not starve the worker's own storage calls (claims, lease
    renewals, progress): with as many handlers as asyncio's default thread pool has
    threads, and more, every one of them still starts."""
    n = min(32, (os.cpu_count() or 1) + 4) + 2
    lock = threading.Lock()
    started = 0
    everyone_in = threading.Event()

    @action("t.block", mode="async", registry=actions)
    def block(job: Any, payload: dict[str, Any]) -> bool:
        nonlocal started
        with lock:
            started += 1
            if started == n:
                everyone_in.set()
        job.report(10)
        return everyone_in.wait(8)

    sock = await make_socket()
    records = [await submit(sock, "t.block", wake=False) for _ in range(n)]
    await set_max_running(TENANT, n)  # one tenant may fill every slot
    worker = make_worker(rstore, actions, concurrency=n, poll_interval_s=0.02, lease_s=1.5)
    async with running(worker):
        for record in records:
            await sock.until_terminal(record.request_id, within=30)
    results = [check_stream(sock.about(r.request_id))["result"] for r in records]
    assert results == [True] * n
    assert {r.attempts for r in [await stored(rstore, r) for r in records]} == {1}


# --- stopping ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_stop_lets_a_running_job_finish_within_the_grace_period(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any, kind: str
) -> None:
    if kind == "sync":

        @action("t.slowish", mode="async", registry=actions)
        def slowish(job: Any, payload: dict[str, Any]) -> str:
            job.report(10)
            time.sleep(0.4)
            return "made it"

    else:

        @action("t.slowish", mode="async", registry=actions)
        async def slowish(job: Any, payload: dict[str, Any]) -> str:
            job.report(10)
            await asyncio.sleep(0.4)
            return "made it"

    sock = await make_socket()
    worker = make_worker(rstore, actions, grace_s=10.0)
    async with running(worker):
        record = await submit(sock, "t.slowish")
        await eventually(lambda: worker.jobs, what="claimed")
    # run() returned: the job had finished first.
    await sock.drain()
    assert check_stream(sock.about(record.request_id))["result"] == "made it"
    assert (await stored(rstore, record)).status is S.COMPLETED


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_stop_releases_a_job_still_running_after_the_grace_period(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any, kind: str
) -> None:
    stopped = threading.Event()

    if kind == "sync":

        @action("t.forever", mode="async", registry=actions)
        def forever(job: Any, payload: dict[str, Any]) -> None:
            try:
                while True:
                    job.report(20, "busy")
                    time.sleep(0.01)
            finally:
                stopped.set()

    else:

        @action("t.forever", mode="async", registry=actions)
        async def forever(job: Any, payload: dict[str, Any]) -> None:
            try:
                job.report(20, "busy")
                await asyncio.Event().wait()
            finally:
                stopped.set()

    sock = await make_socket()
    worker = make_worker(rstore, actions, grace_s=0.2)
    async with running(worker):
        record = await submit(sock, "t.forever")
        await first_progress_above(sock, record.request_id, 0)
    await eventually(stopped.is_set, what="handler stopped")
    released = await stored(rstore, record)
    assert released.status is S.RETRYING
    assert released.lease_owner is None
    assert released.error == {
        "code": "SERVICE_UNAVAILABLE",
        "message": "Worker stopped; released for another worker",
    }
    assert released.due_at is not None and released.due_at <= now_ms()
    await sock.drain()
    assert [f for f in sock.about(record.request_id) if f["type"] in ("complete", "error")] == []

    # Another worker picks the released request up and finishes it.
    other_actions = ActionRegistry()

    @action("t.forever", mode="async", registry=other_actions)
    async def quick(job: Any, payload: dict[str, Any]) -> int:
        job.report(5, "starting over")
        await asyncio.sleep(0.15)
        return job.attempt

    async with running(make_worker(rstore, other_actions)):
        await sock.until_terminal(record.request_id)
    assert check_stream(sock.about(record.request_id))["result"] == 2


# --- resilience ----------------------------------------------------------------------------


async def test_storage_outages_while_polling_claiming_and_renewing_are_survived(
    store: RequestStore, actions: ActionRegistry, make_socket: Any
) -> None:
    flaky = RecordingStore(failures={"list_due": 2, "claim": 1, "renew_lease": 2})

    @action("t.job", mode="async", registry=actions)
    async def job(job: Any, payload: dict[str, Any]) -> str:
        await asyncio.sleep(0.5)  # long enough for a few lease renewals
        return "fine"

    sock = await make_socket()
    async with running(make_worker(flaky, actions, poll_interval_s=0.02, lease_s=0.3)):
        record = await submit(sock, "t.job", store=flaky)
        await sock.until_terminal(record.request_id)
    assert check_stream(sock.about(record.request_id))["result"] == "fine"
    assert sum(flaky.failures.values()) == 0, "every injected outage happened"


class FlakyLayer:
    """The in-memory layer whose first receive on each channel fails."""

    def __init__(self, layer: InMemoryChannelLayer) -> None:
        self.layer = layer
        self.failed: set[str] = set()

    async def receive(self, channel: str) -> dict[str, Any]:
        if channel not in self.failed:
            self.failed.add(channel)
            raise ConnectionError("layer down")
        return await self.layer.receive(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        raise ConnectionError("layer down")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.layer, name)


async def test_listeners_survive_junk_and_layer_errors(
    rstore: RecordingStore,
    actions: ActionRegistry,
    make_socket: Any,
    channel_layer: InMemoryChannelLayer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @action("t.job", mode="async", registry=actions)
    async def job(job: Any, payload: dict[str, Any]) -> str:
        return "ok"

    flaky = FlakyLayer(channel_layer)
    monkeypatch.setattr("streaming.worker.get_channel_layer", lambda alias="default": flaky)
    sock = await make_socket()
    worker = make_worker(rstore, actions, poll_interval_s=0.05)
    async with running(worker):
        await eventually(lambda: len(flaky.failed) == 2, what="both listeners failed once")
        for junk in ({"type": "request.ready"}, {"key": 5}, {"key": "a#b"}, {"key": "a#b#c%zz"}):
            await channel_layer.send(WAKE_CHANNEL, junk)
        await channel_layer.send(WAKE_CHANNEL, {"key": f"{TENANT}#nobody#missing"})
        await notify_cancelled(f"{TENANT}#nobody#missing")
        record = await submit(sock, "t.job")
        await sock.until_terminal(record.request_id)
    assert check_stream(sock.about(record.request_id))["result"] == "ok"


async def test_without_a_channel_layer_the_worker_polls(
    rstore: RecordingStore,
    actions: ActionRegistry,
    make_socket: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @action("t.job", mode="async", registry=actions)
    async def job(job: Any, payload: dict[str, Any]) -> str:
        return "polled"

    monkeypatch.setattr("streaming.worker.get_channel_layer", lambda alias="default": None)
    sock = await make_socket()
    async with running(make_worker(rstore, actions, poll_interval_s=0.02)):
        record = await submit(sock, "t.job")
        await sock.until_terminal(record.request_id)
    assert check_stream(sock.about(record.request_id))["result"] == "polled"
    assert rstore.claims[0][2] is True  # found by polling


async def test_poll_once_claims_nothing_while_every_slot_is_busy(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    release = asyncio.Event()

    @action("t.hold", mode="async", registry=actions)
    async def hold(job: Any, payload: dict[str, Any]) -> None:
        await release.wait()

    sock = await make_socket()
    first = await submit(sock, "t.hold", wake=False)
    second = await submit(sock, "t.hold", wake=False)
    worker = make_worker(rstore, actions, concurrency=1)
    assert await worker.poll_once() == 1
    polls = rstore.polls
    assert await worker.poll_once() == 0
    assert not await worker.try_claim(second.key)
    assert rstore.polls == polls, "no storage read while full"
    release.set()
    await sock.until_terminal(first.request_id)
    await eventually(lambda: not worker.jobs)
    assert await worker.try_claim(second.key)
    assert not await worker.try_claim(second.key), "already running here"
    await sock.until_terminal(second.request_id)
    await worker.shutdown()


# --- races -------------------------------------------------------------------------------


class RenewDuringCompleteStore(RecordingStore):
    """A lease renewal that is in flight while the request completes: it runs into the
    completed request (InvalidTransition) right after ``complete`` committed."""

    def __init__(self) -> None:
        super().__init__()
        self.handler_done = threading.Event()
        self.completed = threading.Event()
        self.renewal_failed = threading.Event()

    def renew_lease(self, *args: Any, **kwargs: Any) -> RequestRecord:
        if not self.handler_done.is_set():
            return super().renew_lease(*args, **kwargs)
        self.completed.wait(5)
        try:
            return super().renew_lease(*args, **kwargs)
        finally:
            self.renewal_failed.set()

    def complete(self, *args: Any, **kwargs: Any) -> RequestRecord:
        record = super().complete(*args, **kwargs)
        self.completed.set()
        self.renewal_failed.wait(5)  # the renewal's answer reaches the loop first
        return record


async def test_a_lease_renewal_racing_the_completion_does_not_swallow_the_complete_frame(
    store: RequestStore, actions: ActionRegistry, make_socket: Any
) -> None:
    racy = RenewDuringCompleteStore()

    @action("t.job", mode="async", registry=actions)
    async def job(job: Any, payload: dict[str, Any]) -> str:
        racy.handler_done.set()
        await asyncio.sleep(0.3)  # a renewal (every 0.1 s) starts meanwhile and waits
        return "done"

    sock = await make_socket()
    async with running(make_worker(racy, actions, lease_s=0.3)):
        record = await submit(sock, "t.job", store=racy)
        await sock.until_terminal(record.request_id, within=8)
    assert racy.renewal_failed.is_set()
    assert check_stream(sock.about(record.request_id))["result"] == "done"


# --- more edges ----------------------------------------------------------------------------


async def test_a_handler_that_reports_100_itself_gets_no_extra_done_frame(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    @action("t.full", mode="async", registry=actions)
    async def full(job: Any, payload: dict[str, Any]) -> str:
        job.report(100, "all rows read")
        await asyncio.sleep(0.15)
        return "ok"

    sock = await make_socket()
    async with running(make_worker(rstore, actions)):
        record = await submit(sock, "t.full")
        await sock.until_terminal(record.request_id)
        await sock.drain()
    check_stream(sock.about(record.request_id))
    progress = [f for f in sock.about(record.request_id) if f["type"] == "progress"]
    assert [(f["percentage"], f["message"]) for f in progress] == [(100, "all rows read")]


async def test_a_handler_cleaning_up_after_a_cancel_stops_at_its_next_report(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    cleaned = threading.Event()

    @action("t.cleanup", mode="async", registry=actions)
    async def cleanup(job: Any, payload: dict[str, Any]) -> str:
        job.report(10)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cleaned.set()
            job.report(11, "cleaning up")  # raises JobCancelled: nothing more is sent
        return "never"

    sock = await make_socket()
    worker = make_worker(rstore, actions)
    async with running(worker):
        record = await submit(sock, "t.cleanup")
        await first_progress_above(sock, record.request_id, 0)
        await _cancel_by_hand(sock, record)
        await eventually(cleaned.is_set)
        await eventually(lambda: not worker.jobs)
        await sock.drain()
    assert check_stream(sock.about(record.request_id))["error"]["code"] == "CANCELLED"


class FailingCompleteStore(RecordingStore):
    def __init__(self) -> None:
        super().__init__()
        self.complete_failures = 1

    def complete(self, *args: Any, **kwargs: Any) -> RequestRecord:
        with self.lock:
            fail, self.complete_failures = self.complete_failures > 0, self.complete_failures - 1
        if fail:
            raise StorageUnavailable("injected")
        return super().complete(*args, **kwargs)


async def test_a_completion_lost_to_an_outage_is_rerun_after_the_lease(
    store: RequestStore,
    actions: ActionRegistry,
    make_socket: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = FailingCompleteStore()
    attempts: list[int] = []

    @action("t.job", mode="async", registry=actions)
    async def job(job: Any, payload: dict[str, Any]) -> int:
        attempts.append(job.attempt)
        return job.attempt

    sock = await make_socket()
    async with running(make_worker(failing, actions, lease_s=0.3, poll_interval_s=0.02)):
        record = await submit(sock, "t.job", store=failing)
        await sock.until_terminal(record.request_id)
        await sock.drain()
    assert attempts == [1, 2]  # at least once: the request was not lost
    assert check_stream(sock.about(record.request_id))["result"] == 2
    assert "worker failed to finish request" in caplog.text


async def test_run_one_claims_and_runs_a_single_request(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    @action("t.job", mode="async", registry=actions)
    def job(job: Any, payload: dict[str, Any]) -> str:
        return "streamed"

    sock = await make_socket()
    record = await submit(sock, "t.job", wake=False)
    worker = make_worker(rstore, actions)
    assert await worker.run_one(record.key)
    assert not worker.jobs
    assert not await worker.run_one(record.key), "already completed"
    await sock.drain()
    assert check_stream(sock.about(record.request_id))["result"] == "streamed"


async def test_heartbeat_failures_never_stop_the_worker(
    rstore: RecordingStore,
    actions: ActionRegistry,
    make_socket: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise StorageUnavailable("injected")

    monkeypatch.setattr("streaming.worker.heartbeat.beat", down)
    monkeypatch.setattr("streaming.worker.heartbeat.forget", down)

    @action("t.job", mode="async", registry=actions)
    async def job(job: Any, payload: dict[str, Any]) -> str:
        return "fine"

    sock = await make_socket()
    async with running(make_worker(rstore, actions)):
        record = await submit(sock, "t.job")
        await sock.until_terminal(record.request_id)
    assert "could not record its heartbeat" in caplog.text
    assert "could not remove its heartbeat" in caplog.text


async def test_stop_finishes_what_it_can_and_releases_the_rest(
    rstore: RecordingStore, actions: ActionRegistry, make_socket: Any
) -> None:
    @action("t.mixed", mode="async", registry=actions)
    async def mixed(job: Any, payload: dict[str, Any]) -> str:
        job.report(30)
        await asyncio.sleep(0.1 if payload["quick"] else 30)
        return "quick"

    sock = await make_socket()
    worker = make_worker(rstore, actions, grace_s=0.5)
    async with running(worker):
        quick = await submit(sock, "t.mixed", {"quick": True})
        slow = await submit(sock, "t.mixed", {"quick": False})
        await eventually(lambda: len(worker.jobs) == 2, what="both running")
    assert (await stored(rstore, quick)).status is S.COMPLETED
    released = await stored(rstore, slow)
    assert released.status is S.RETRYING and released.percentage == 30
