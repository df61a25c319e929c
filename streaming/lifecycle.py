"""The request lifecycle in one place, whoever drives it (a socket's pipeline, the
server-side Python API, a worker, the admin, an API Gateway event).

::

    enqueue ──► PENDING ──claim──► PROCESSING ──complete──► COMPLETED
                   ▲   ▲               │  └──────fail──────► FAILED
                   │   └─release/retry─┘                       │
                   │        (RETRYING)          cancel ──────► CANCELLED
                   └──────────── requeue (admin) ◄─────────────┘

Every move is one conditional write in the request store
(``storage/requests/store.py``); this module adds what must go with it: quotas and the
shard count on enqueue, a nudge to a worker through the channel layer (polling the
sharded ``due`` index is the fallback), a notice to the worker holding a cancelled
request, and the terminal frame to the sender and every subscriber. Storage calls run
on the storage pool (``connections.storage_pool``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from connections.manager import Target, manager
from connections.storage_pool import run_storage
from connections.tenants import TenantPolicy, get_tenant_policy
from protocol import frames
from protocol.errors import ErrorCode, ProtocolError
from storage.errors import AlreadyExists, InvalidTransition, StorageUnavailable
from storage.errors import ValidationError as StoreValidationError
from storage.requests.model import RequestKey, RequestRecord
from storage.requests.quota import QuotaExceeded, QuotaLimits
from storage.requests.store import RequestStore, request_store
from streaming.actions.registry import ActionRegistry, ActionSpec, registry
from streaming.watchers import announce_request
from streaming.webhooks import request_ended

log = logging.getLogger(__name__)

#: Channel a new or requeued request's key is sent on; one idle worker receives it.
WAKE_CHANNEL = "streamer.requests"
#: Group of every worker; a cancel is announced there (the holder stops the handler).
WORKERS_GROUP = "streamer.workers"


# --- enqueue ---------------------------------------------------------------------------


async def enqueue(
    *,
    tenant_id: str,
    user_id: str,
    action: str,
    payload: dict[str, Any],
    request_id: str,
    metadata: dict[str, Any] | None = None,
    origin: Target | None = None,
    actions: ActionRegistry = registry,
) -> RequestRecord:
    """Store a request for ``action`` on behalf of ``tenant_id``/``user_id`` and wake a
    worker: the entry point for callers without a socket (the server-side API).

    Same rules as a client's request: the action must be a registered ``async`` action
    and ``payload`` must pass its schema; the tenant must exist and be enabled; the
    user's and tenant's quotas of active requests apply. With ``origin`` (a socket),
    that socket gets the request's frames like its sender would; without, only
    subscribers do. Raises :class:`ProtocolError` with INVALID_ACTION, VALIDATION_ERROR,
    FORBIDDEN (tenant unknown or disabled), QUOTA_EXCEEDED or DUPLICATE_REQUEST, and
    :class:`StorageUnavailable` (the request may or may not be stored then: sending the
    same id again is safe, a duplicate answers DUPLICATE_REQUEST).
    """
    spec = actions.get(action)
    if spec.mode != "async":
        raise ProtocolError(
            ErrorCode.INVALID_ACTION, "Not an asynchronous action", {"action": action}
        )
    spec.validate(payload)
    policy = await sync_to_async(get_tenant_policy)(tenant_id)
    if policy is None or not policy.active:
        raise ProtocolError(ErrorCode.FORBIDDEN, "Tenant unavailable")
    return await submit(
        spec,
        tenant_id=tenant_id,
        user_id=user_id,
        request_id=request_id,
        payload=payload,
        metadata=metadata,
        origin=origin,
        limits=quota_limits(policy),
    )


def quota_limits(policy: TenantPolicy) -> QuotaLimits:
    """The active-request quotas a tenant's policy sets."""
    return QuotaLimits(
        per_user=policy.max_active_requests_per_user, per_tenant=policy.max_active_requests
    )


async def submit(
    spec: ActionSpec,
    *,
    tenant_id: str,
    user_id: str,
    request_id: str,
    payload: dict[str, Any],
    metadata: dict[str, Any] | None,
    origin: Target | None,
    limits: QuotaLimits | None,
    store: RequestStore = request_store,
) -> RequestRecord:
    """Store an already validated request (one conditional write, after the quota
    holds) on ``STREAMER_QUEUE_SHARDS`` shards and wake a worker. For callers that
    checked the action and hold the tenant's policy (the pipeline); errors as
    :func:`enqueue`."""
    try:
        record = await run_storage(
            store.enqueue,
            tenant_id=tenant_id,
            user_id=user_id,
            request_id=request_id,
            action=spec.name,
            payload=payload,
            metadata=metadata,
            max_attempts=spec.max_attempts,
            timeout_s=spec.timeout_s,
            connection_id=origin.connection_id if origin else "",
            origin_transport=origin.transport if origin else "",
            origin_address=origin.address if origin else "",
            shards=settings.STREAMER_QUEUE_SHARDS,
            limits=limits,
        )
    except QuotaExceeded as exc:
        raise ProtocolError(
            ErrorCode.QUOTA_EXCEEDED,
            f"Too many active requests for this {exc.scope}",
            {"scope": exc.scope, "limit": exc.limit},
        ) from None
    except AlreadyExists as exc:
        raise ProtocolError(
            ErrorCode.DUPLICATE_REQUEST,
            "A request with this id already exists",
            {"status": exc.existing_status},
        ) from None
    except StoreValidationError as exc:
        # The store's own messages name the field and its limit, never library text.
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
    await announce_request(record, origin)
    await wake_worker(record.key.as_string())
    return record


def acknowledgment(record: RequestRecord) -> dict[str, Any]:
    """The frame telling the sender its request is stored."""
    return frames.acknowledgment(record.request_id, "Request queued")


# --- a worker's side -------------------------------------------------------------------


async def claim(
    key: RequestKey, worker_id: str, lease_ms: int, *, store: RequestStore = request_store
) -> RequestRecord | None:
    """Take ``key`` for ``worker_id`` with a lease (one conditional update: two workers
    never both win); None when it is not due, taken, final, or storage is out of reach."""
    try:
        return await run_storage(store.claim, key, worker_id, lease_ms)
    except StorageUnavailable:
        log.warning("storage unavailable while claiming")
        return None


async def complete(
    key: RequestKey, result: Any, *, worker_id: str, store: RequestStore = request_store
) -> RequestRecord | None:
    """Record the result and send the ``complete`` frame to the sender and every
    subscriber; None when the request is no longer this worker's (cancelled, or its
    lease was taken: whoever won reports)."""
    try:
        done = await run_storage(store.complete, key, result, worker_id=worker_id)
    except InvalidTransition:
        return None
    await request_ended(done)
    await send_terminal(done, frames.complete(done.request_id, result, metadata=done.metadata))
    return done


async def fail(
    key: RequestKey,
    code: ErrorCode,
    message: str,
    *,
    worker_id: str,
    store: RequestStore = request_store,
) -> RequestRecord | None:
    """Record the failure and send the terminal ``error`` frame; None as for
    :func:`complete`."""
    try:
        done = await run_storage(store.fail, key, code.value, message, worker_id=worker_id)
    except InvalidTransition:
        return None
    await request_ended(done)
    await send_terminal(done, frames.error(done.request_id, code, message))
    return done


async def release(
    key: RequestKey,
    retry_at: int,
    code: ErrorCode,
    message: str,
    *,
    worker_id: str,
    store: RequestStore = request_store,
) -> None:
    """Give the request back to the queue, due at ``retry_at`` (epoch ms): a retry
    after a failed attempt, or a worker stopping. Nothing happens when it is no longer
    this worker's; storage failures propagate (the lease then expires by itself)."""
    with contextlib.suppress(InvalidTransition):
        await run_storage(
            store.schedule_retry, key, retry_at, code.value, message, worker_id=worker_id
        )


# --- cancel and requeue (a user or an admin) -----------------------------------------


async def cancel(key: RequestKey, *, store: RequestStore = request_store) -> RequestRecord:
    """Cancel a request that has not finished, whoever asks (its user or an admin).

    One conditional write, then the worker holding it is told to stop and its sender
    and subscribers get the terminal ``error`` frame, code CANCELLED. Raises NotFound,
    or InvalidTransition when it had already ended (nothing is sent then).
    """
    record = await run_storage(store.cancel, key)
    await request_ended(record)
    await notify_cancelled(key.as_string())
    await send_terminal(
        record, frames.error(record.request_id, ErrorCode.CANCELLED, "Request cancelled")
    )
    return record


async def requeue(key: RequestKey, *, store: RequestStore = request_store) -> RequestRecord:
    """Run a FAILED or CANCELLED request again under the same id and nudge a worker.
    Raises NotFound, or InvalidTransition when it is not FAILED or CANCELLED."""
    record = await run_storage(store.requeue, key, shards=settings.STREAMER_QUEUE_SHARDS)
    await announce_request(record)
    await wake_worker(key.as_string())
    return record


# --- frames and notices ----------------------------------------------------------------


def origin_of(record: RequestRecord) -> Target | None:
    """Where the sender of a request was connected (None: no socket sent it)."""
    if not record.connection_id or not record.origin_transport:
        return None
    return Target(record.connection_id, record.origin_transport, record.origin_address)


async def send_terminal(record: RequestRecord, frame: dict[str, Any]) -> None:
    """Deliver a request's terminal frame to its sender and all current subscribers
    (re-read, so a subscriber that came late still gets the end)."""
    await manager.send_to_request(
        record.key.as_string(), frame, origin=origin_of(record), fresh=True
    )


async def wake_worker(request_key: str) -> None:
    """Tell one worker that ``request_key`` is ready to be claimed."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.send(WAKE_CHANNEL, {"type": "request.ready", "key": request_key})
    except ChannelFull:
        log.debug("wake channel full; workers will find the request by polling")
    except Exception:  # the layer (Redis) is down: polling still finds the request
        log.warning("could not wake a worker", exc_info=True)


async def notify_cancelled(request_key: str) -> None:
    """Tell every worker that ``request_key`` was cancelled (the holder stops it)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(WORKERS_GROUP, {"type": "request.cancelled", "key": request_key})
    except Exception:  # the worker also sees it when it next renews its lease
        log.warning("could not notify workers of a cancel", exc_info=True)
