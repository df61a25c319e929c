"""The worker: claims stored requests and runs their handlers.

In the style of healthchecks' ``sendalerts``: a plain loop, an atomic conditional claim
(DynamoDB ``UpdateItem`` with a condition, so two workers never take the same request),
bounded concurrency, and a clean stop. New requests arrive as a nudge on the channel
layer; polling the sharded ``due`` index is the fallback and also finds requests whose
worker died (their lease expired) and retries whose time has come.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import enum
import functools
import logging
import os
import random
import socket
import uuid
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from connections.storage_pool import run_storage
from connections.tenants import get_tenant_policy
from protocol import frames
from protocol.errors import ErrorCode, ProtocolError
from storage import heartbeat
from storage.base import now_ms, warm_up
from storage.errors import InvalidTransition, StorageUnavailable, StoreError
from storage.heartbeat import HEARTBEAT_INTERVAL_S
from storage.requests.model import RequestKey, RequestRecord
from storage.requests.store import RequestStore, request_store
from streaming import lifecycle
from streaming.actions.registry import ActionRegistry, ActionSpec, FinalError, registry
from streaming.fairness import PolicyLookup, interleave_by_tenant, lookup_shares
from streaming.jobs import JobCancelled, JobContext
from streaming.lifecycle import WAKE_CHANNEL, WORKERS_GROUP, origin_of
from streaming.metrics import QUEUE_WAIT_SECONDS, REQUEST_SECONDS, WORKER_JOBS
from streaming.output import OutputLost, OutputWriter
from streaming.output_delivery import OutputPublisher
from streaming.progress import ProgressReporter

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    """host:pid:random — unique per worker process run."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


# A poll queries again (at most this many times) when a tenant reached its share while
# its requests were being claimed, to find the other tenants' work past that tenant's.
MAX_POLL_ROUNDS = 3


class Claim(enum.Enum):
    """What became of one claim attempt."""

    STARTED = "started"
    AT_SHARE = "at share"  # the tenant holds its share of this worker's slots
    NOT_CLAIMED = "not claimed"  # no free slot, already ours, or storage said no


def retry_delay_s(attempt: int, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Exponential backoff with jitter for the retry after ``attempt`` (1-based)."""
    return min(cap_s, base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


class Worker:
    """Runs requests until ``stop`` is set, then lets running ones finish for
    ``grace_s`` seconds and releases the rest for another worker."""

    def __init__(
        self,
        *,
        worker_id: str | None = None,
        concurrency: int = 8,
        lease_s: float = 30.0,
        poll_interval_s: float = 1.0,
        shards: int = 4,
        grace_s: float = 10.0,
        retry_base_s: float = 1.0,
        store: RequestStore = request_store,
        actions: ActionRegistry = registry,
        policies: PolicyLookup = get_tenant_policy,
        progress_frames_per_s: float = 10,
        progress_writes_per_s: float = 1,
    ) -> None:
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.lease_ms = int(lease_s * 1000)
        self.poll_interval_s = poll_interval_s
        self.shards = shards
        self.grace_s = grace_s
        self.retry_base_s = retry_base_s
        self.store = store
        self.actions = actions
        self.policies = policies
        self.progress_frames_per_s = progress_frames_per_s
        self.progress_writes_per_s = progress_writes_per_s
        self.jobs: dict[str, tuple[asyncio.Task[None], JobContext]] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._poke = asyncio.Event()
        self._backlog = False
        self._claiming: set[str] = set()
        # Slots each tenant holds (running or being claimed) and its share as last read.
        self._held: collections.Counter[str] = collections.Counter()
        self._shares: dict[str, int] = {}
        # Requests whose handler ended and whose final write/terminal frame is under way.
        self._finishing: set[str] = set()
        # Sync handlers get their own threads: in asyncio's default pool (cpu + 4 threads)
        # they would starve the worker's own storage calls (claims, lease renewals).
        self._handler_threads: concurrent.futures.ThreadPoolExecutor | None = None
        self.completed = 0

    @classmethod
    def from_settings(cls, **overrides: Any) -> Worker:
        """A worker configured by the ``STREAMER_*`` settings (concurrency, lease,
        poll interval, queue shards, progress rates); ``overrides`` win."""
        options: dict[str, Any] = {
            "concurrency": settings.STREAMER_WORKER_CONCURRENCY,
            "lease_s": settings.STREAMER_LEASE_S,
            "poll_interval_s": settings.STREAMER_POLL_INTERVAL_S,
            "shards": settings.STREAMER_QUEUE_SHARDS,
            "progress_frames_per_s": settings.STREAMER_PROGRESS_FRAMES_PER_S,
            "progress_writes_per_s": settings.STREAMER_PROGRESS_WRITES_PER_S,
        }
        return cls(**{**options, **overrides})

    # -- the loop ------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run requests until ``stop`` is set."""
        log.info("worker %s started (concurrency %d)", self.worker_id, self.concurrency)
        await run_storage(warm_up)
        listeners = [asyncio.create_task(self._listen_wakeups(stop))]
        listeners.append(asyncio.create_task(self._heartbeat_loop()))
        layer = get_channel_layer()
        own_channel = None
        if layer is not None:
            own_channel = await layer.new_channel("worker.")
            await layer.group_add(WORKERS_GROUP, own_channel)
            listeners.append(asyncio.create_task(self._listen_cancels(layer, own_channel)))
        try:
            while not stop.is_set():
                self._poke.clear()  # before polling, so a nudge during the poll is kept
                await self.poll_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        _first(stop.wait(), self._poke.wait()), timeout=self.poll_interval_s
                    )
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
            if layer is not None and own_channel is not None:
                with contextlib.suppress(Exception):
                    await layer.group_discard(WORKERS_GROUP, own_channel)
            await self.shutdown()
            await self._forget_heartbeat()
            if self._handler_threads is not None:
                self._handler_threads.shutdown(wait=False)
                self._handler_threads = None
        log.info("worker %s stopped", self.worker_id)

    # -- heartbeat (storage/heartbeat.py: the admin shows who is alive) ------
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S

    async def _heartbeat_loop(self) -> None:
        """Record a heartbeat now and every ``heartbeat_interval_s`` until cancelled.

        A failed beat is logged and never stops the worker.
        """
        started_at = now_ms()
        while True:
            try:
                await run_storage(
                    heartbeat.beat, self.worker_id, started_at=started_at, jobs=len(self.jobs)
                )
            except Exception:
                log.warning("worker %s could not record its heartbeat", self.worker_id)
            await asyncio.sleep(self.heartbeat_interval_s)

    async def _forget_heartbeat(self) -> None:
        """Remove this worker's heartbeat on a clean stop (best effort, at most 2 s)."""
        try:
            await asyncio.wait_for(run_storage(heartbeat.forget, self.worker_id), 2.0)
        except Exception:
            log.warning("worker %s could not remove its heartbeat", self.worker_id)

    async def poll_once(self) -> int:
        """Claim due requests (new, retrying, or with an expired lease) while slots are
        free, round-robin by tenant and past the backlog of tenants at their share;
        returns how many were started."""
        started = 0
        for _ in range(MAX_POLL_ROUNDS):
            free = self.concurrency - len(self.jobs)
            if free <= 0 or self._slots.locked():
                self._backlog = True
                return started
            try:
                full = await self._tenants_at_share()
                due = await run_storage(
                    self.store.list_due, limit=free * 2, shards=self.shards, exclude_tenants=full
                )
            except StorageUnavailable:
                log.warning("storage unavailable while polling; retrying later")
                return started
            claimed, reached_share = 0, False
            for record in interleave_by_tenant(due):
                if len(self.jobs) >= self.concurrency:
                    break
                if record.key.as_string() in self.jobs:
                    continue
                outcome = await self._claim(record.key)
                claimed += outcome is Claim.STARTED
                reached_share = reached_share or outcome is Claim.AT_SHARE
            started += claimed
            self._backlog = len(self.jobs) >= self.concurrency and len(due) > claimed
            if not reached_share:
                break
        return started

    async def _tenants_at_share(self) -> frozenset[str]:
        """Tenants holding their share of this worker's slots (their policies are
        cached in connections.tenants, and read off the event loop)."""
        held = {t: n for t, n in self._held.items() if n > 0}
        if not held:
            return frozenset()
        # Tenant policies come from Django's database (not DynamoDB): they stay off the
        # storage pool, whose threads would each keep a database connection open.
        self._shares.update(
            await asyncio.to_thread(lookup_shares, held, self.concurrency, self.policies)
        )
        return frozenset(t for t, n in held.items() if n >= self._shares[t])

    async def _listen_wakeups(self, stop: asyncio.Event) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        while not stop.is_set():
            await self._slots.acquire()
            self._slots.release()
            try:
                message = await layer.receive(WAKE_CHANNEL)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("channel layer unavailable; polling only for a while")
                await asyncio.sleep(self.poll_interval_s)
                continue
            key = message.get("key")
            if not isinstance(key, str) or stop.is_set():
                continue
            try:
                parsed = RequestKey.from_string(key)
            except ValueError:
                continue
            # A request of a tenant at its share waits for a poll; any other refusal
            # (no slot, storage) asks for one now.
            if await self._claim(parsed) is Claim.NOT_CLAIMED:
                self._poke.set()

    async def _listen_cancels(self, layer: Any, channel: str) -> None:
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(self.poll_interval_s)
                continue
            held = self.jobs.get(message.get("key", ""))
            if held is not None:
                self._cancel_job(*held)

    async def run_one(self, key: RequestKey) -> bool:
        """Claim ``key`` and run it to its end (the DynamoDB Streams entry point).
        False when it was not claimable (already taken, not due, or final)."""
        if not await self.try_claim(key):
            return False
        held = self.jobs.get(key.as_string())
        if held is not None:
            await asyncio.gather(held[0], return_exceptions=True)
        return True

    # -- one request -----------------------------------------------------------------
    async def try_claim(self, key: RequestKey) -> bool:
        """Claim ``key`` if it is due, a slot is free and its tenant is below its share;
        start it. False otherwise."""
        return await self._claim(key) is Claim.STARTED

    async def _claim(self, key: RequestKey) -> Claim:
        name = key.as_string()
        tenant = key.tenant_id
        if self._held[tenant] > 0:  # below 1 every tenant is below its share
            shares = await asyncio.to_thread(  # Django's database: see _tenants_at_share
                lookup_shares, (tenant,), self.concurrency, self.policies
            )
            self._shares.update(shares)
        # A wake-up and a poll may offer the same key at once: claim it once per process.
        if name in self.jobs or name in self._claiming or self._slots.locked():
            return Claim.NOT_CLAIMED
        if self._held[tenant] >= self._shares.get(tenant, 1):
            return Claim.AT_SHARE
        self._held[tenant] += 1
        self._claiming.add(name)
        await self._slots.acquire()
        try:
            record = await lifecycle.claim(key, self.worker_id, self.lease_ms, store=self.store)
        finally:
            self._claiming.discard(name)
        if record is None or name in self.jobs:
            self._release(tenant)
            return Claim.NOT_CLAIMED
        reporter = ProgressReporter(
            asyncio.get_running_loop(),
            publish=lambda p, m, d: self._publish_progress(record, p, m, d),
            persist=lambda p, m, d: self._persist_progress(record, p, m, d),
            initial=record.percentage,
            frames_per_s=self.progress_frames_per_s,
            writes_per_s=self.progress_writes_per_s,
        )
        ctx = JobContext(
            request_id=record.request_id,
            tenant_id=record.tenant_id,
            user_id=record.user_id,
            action=record.action,
            attempt=record.attempts,
            reporter=reporter,
            metadata=record.metadata,
            output=OutputWriter(
                asyncio.get_running_loop(),
                record.key,
                OutputPublisher(record),
                stored_bytes=record.output_bytes,
            ),
        )
        task = asyncio.create_task(self._execute(record, ctx))
        self.jobs[key.as_string()] = (task, ctx)
        WORKER_JOBS.set(len(self.jobs))
        return Claim.STARTED

    def _release(self, tenant: str) -> bool:
        """Free a slot ``tenant`` held; True when the tenant was at its share (its
        requests were left out of polls, so a poll should look again)."""
        share = self._shares.get(tenant)  # known once the tenant held a slot at a poll
        was_full = share is not None and self._held[tenant] >= share
        self._held[tenant] -= 1
        if self._held[tenant] <= 0:
            del self._held[tenant]
            self._shares.pop(tenant, None)
        self._slots.release()
        return was_full

    async def _execute(self, record: RequestRecord, ctx: JobContext) -> None:
        key = record.key
        if record.attempts == 1:  # first run since enqueue (or since an admin retry)
            waited_from = max(record.created_at, record.requeued_at or 0)
            QUEUE_WAIT_SECONDS.observe(max(0, now_ms() - waited_from) / 1000)
        renewer = asyncio.create_task(self._renew(record, ctx))
        try:
            await self._run_handler(record, ctx)
        except asyncio.CancelledError:
            await ctx.reporter.close(flush=False)
            await self._close_output(ctx, flush=False)
            raise
        except Exception:
            log.exception("worker failed to finish request %s", record.request_id)
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            self.jobs.pop(key.as_string(), None)
            self._finishing.discard(key.as_string())
            WORKER_JOBS.set(len(self.jobs))
            was_full = self._release(record.tenant_id)
            # The last poll found more due work than free slots, or it left this
            # tenant's requests out: look again now.
            if self._backlog or was_full:
                self._poke.set()

    async def _run_handler(self, record: RequestRecord, ctx: JobContext) -> None:
        try:
            spec = self.actions.get(record.action)
        except ProtocolError:
            await self._fail(
                record, ctx, ErrorCode.PROCESSING_FAILED, "This action is no longer available"
            )
            return
        if record.attempts > record.max_attempts:
            await self._fail(
                record, ctx, ErrorCode.PROCESSING_FAILED, "The request used up its attempts"
            )
            return
        timeout = record.timeout_s or spec.timeout_s
        limit: asyncio.Timeout | None = None
        try:
            payload = spec.validate(record.payload or {})
            async with asyncio.timeout(timeout) as limit:
                result = await self._call(spec, ctx, payload)
        except TimeoutError as exc:
            if limit is None or not limit.expired():
                # The handler's own TimeoutError (a socket, a driver), not the time limit.
                await self._handler_raised(record, ctx, spec, exc)
                return
            ctx.cancelled.set()
            await self._fail(record, ctx, ErrorCode.TIMEOUT, "The request ran past its time limit")
        except JobCancelled:
            await ctx.reporter.close(flush=False)
            await self._close_output(ctx, flush=False)
        except FinalError as exc:
            await self._fail(
                record, ctx, ErrorCode.PROCESSING_FAILED, str(exc)[:500] or "Processing failed"
            )
        except ProtocolError as exc:
            await self._fail(record, ctx, ErrorCode.PROCESSING_FAILED, exc.message)
        except Exception as exc:
            await self._handler_raised(record, ctx, spec, exc)
        else:
            await self._complete(record, ctx, result)

    async def _handler_raised(
        self, record: RequestRecord, ctx: JobContext, spec: ActionSpec, exc: Exception
    ) -> None:
        # Storage out of reach (throttled, down) is transient for every action.
        retryable = spec.is_retryable(exc) or isinstance(exc, StorageUnavailable)
        if retryable and record.attempts < record.max_attempts:
            await self._retry(record, ctx)
        elif retryable:
            await self._fail(
                record, ctx, ErrorCode.PROCESSING_FAILED, "The request failed after every attempt"
            )
        else:
            log.error("handler %s raised on request %s", spec.name, record.request_id, exc_info=exc)
            await self._fail(record, ctx, ErrorCode.INTERNAL_ERROR, "Internal error")

    async def _call(self, spec: ActionSpec, ctx: JobContext, payload: Any) -> Any:
        if spec.is_coroutine:
            return await spec.handler(ctx, payload)
        if self._handler_threads is None:
            self._handler_threads = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="streamer-handler"
            )
        call = functools.partial(contextvars.copy_context().run, spec.handler, ctx, payload)
        return await asyncio.get_running_loop().run_in_executor(self._handler_threads, call)

    async def _complete(self, record: RequestRecord, ctx: JobContext, result: Any) -> None:
        self._finishing.add(record.key.as_string())
        if ctx.reporter.percentage < 100:
            ctx.reporter.report(100.0, "Done")
        await ctx.reporter.close()
        await self._close_output(ctx)
        done = await lifecycle.complete(
            record.key, result, worker_id=self.worker_id, store=self.store
        )
        if done is None:
            return  # cancelled meanwhile, or our lease was taken: the winner reports
        self.completed += 1
        REQUEST_SECONDS.labels(record.action, "COMPLETED").observe(_age_s(record))

    async def _fail(
        self, record: RequestRecord, ctx: JobContext, code: ErrorCode, message: str
    ) -> None:
        self._finishing.add(record.key.as_string())
        await ctx.reporter.close()
        await self._close_output(ctx)
        done = await lifecycle.fail(
            record.key, code, message, worker_id=self.worker_id, store=self.store
        )
        if done is not None:
            REQUEST_SECONDS.labels(record.action, "FAILED").observe(_age_s(record))

    async def _retry(self, record: RequestRecord, ctx: JobContext) -> None:
        self._finishing.add(record.key.as_string())
        await ctx.reporter.close()
        await self._close_output(ctx)
        await self._save_progress(record.key, ctx)
        delay = retry_delay_s(record.attempts, self.retry_base_s)
        retry_at = now_ms() + int(delay * 1000)
        await lifecycle.release(
            record.key,
            retry_at,
            ErrorCode.PROCESSING_FAILED,
            "Attempt failed; retrying",
            worker_id=self.worker_id,
            store=self.store,
        )

    async def _renew(self, record: RequestRecord, ctx: JobContext) -> None:
        interval = self.lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                await run_storage(self.store.renew_lease, record.key, self.worker_id, self.lease_ms)
            except InvalidTransition:
                self._lost(record)
                return
            except StorageUnavailable:
                log.warning("could not renew lease of %s", record.request_id)

    async def _publish_progress(
        self, record: RequestRecord, percentage: float, message: str, details: dict | None
    ) -> None:
        from connections.manager import manager

        frame = frames.progress(record.request_id, percentage, message, details)
        await manager.send_to_request(record.key.as_string(), frame, origin=origin_of(record))

    @staticmethod
    async def _close_output(ctx: JobContext, *, flush: bool = True) -> None:
        """Store (and send) the output the handler wrote before any terminal frame;
        without ``flush`` (cancelled), drop what is not stored yet."""
        if ctx.output is None:
            return
        try:
            await ctx.output.close(flush=flush)
        except OutputLost:
            log.warning("output of %s was taken over by another writer", ctx.request_id)

    async def _persist_progress(
        self, record: RequestRecord, percentage: float, message: str, details: dict | None
    ) -> None:
        try:
            await run_storage(
                self.store.update_progress,
                record.key,
                percentage,
                message,
                details,
                worker_id=self.worker_id,
            )
        except InvalidTransition:
            self._lost(record)

    async def _save_progress(self, key: RequestKey, ctx: JobContext) -> None:
        """Persist the latest progress before the request is released (retry, stop):
        the next attempt resumes from it, so its frames never go below what clients saw."""
        update = ctx.reporter.unsaved()
        if update is None:
            return
        with contextlib.suppress(StoreError):
            await run_storage(self.store.update_progress, key, *update, worker_id=self.worker_id)

    def _lost(self, record: RequestRecord) -> None:
        """Storage says the request is not ours any more (cancelled, or its lease was
        taken): stop the handler. Not once the handler has ended: its final conditional
        write finds out by itself, and cancelling then could swallow the terminal frame
        of a request that did complete (a renewal racing the completion)."""
        key = record.key.as_string()
        held = self.jobs.get(key)
        if held is not None and key not in self._finishing:
            self._cancel_job(*held)

    def _cancel_job(self, task: asyncio.Task[None], ctx: JobContext) -> None:
        """Stop a job whose request was cancelled (its canceller sent the terminal frame)."""
        ctx.cancelled.set()
        task.cancel()

    async def shutdown(self) -> None:
        """Let running jobs finish for ``grace_s``, then release the rest."""
        if not self.jobs:
            return
        tasks = [task for task, _ in self.jobs.values()]
        _, pending = await asyncio.wait(tasks, timeout=self.grace_s)
        finishing = [t for k, (t, _) in self.jobs.items() if t in pending and k in self._finishing]
        if finishing:  # already writing their terminal state: let them deliver it
            await asyncio.wait(finishing, timeout=self.grace_s)
        for key_string, (task, ctx) in list(self.jobs.items()):
            if task in pending and not task.done():
                ctx.cancelled.set()
                task.cancel()
                await self._save_progress(RequestKey.from_string(key_string), ctx)
                with contextlib.suppress(StorageUnavailable):
                    await lifecycle.release(
                        RequestKey.from_string(key_string),
                        now_ms(),
                        ErrorCode.SERVICE_UNAVAILABLE,
                        "Worker stopped; released for another worker",
                        worker_id=self.worker_id,
                        store=self.store,
                    )
        await asyncio.gather(*pending, return_exceptions=True)


def _age_s(record: RequestRecord) -> float:
    return max(0.0, (now_ms() - record.created_at) / 1000)


async def _first(*aws: Any) -> None:
    """Return when the first of ``aws`` completes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
