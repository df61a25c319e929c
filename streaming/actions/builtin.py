"""Actions every deployment has (PROTOCOL.md §3): echo and the request.* family."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connections.manager import Target, manager
from connections.storage_pool import run_storage
from protocol import frames
from protocol.errors import ErrorCode, ProtocolError, validation_error
from storage.errors import InvalidTransition, NotFound
from storage.errors import ValidationError as StoreValidationError
from storage.requests.model import FINAL, RequestKey, RequestRecord, RequestStatus
from storage.requests.store import request_store
from storage.subscription import subscription_store
from streaming.actions.registry import action
from streaming.output_delivery import replay_output
from streaming.pipeline import ActionContext
from streaming.queue import notify_cancelled

REQUEST_ID = Field(min_length=1, max_length=128)


class RequestRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    request_id: str = REQUEST_ID


class StatusPayload(RequestRef):
    subscribe: bool = True
    after_seq: int | None = Field(default=None, ge=0)


class ListPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: RequestStatus | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=2048)


def _key(ctx: ActionContext, request_id: str) -> RequestKey:
    return RequestKey(ctx.tenant_id, ctx.user_id, request_id)


def _not_found() -> ProtocolError:
    return ProtocolError(ErrorCode.NOT_FOUND, "Request not found")


@action("echo")
async def echo(ctx: ActionContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Answer with the payload; touches no storage."""
    return {"echo": payload}


@action("request.status", schema=StatusPayload)
async def request_status(ctx: ActionContext, payload: StatusPayload) -> dict[str, Any]:
    """The caller's request record; with ``subscribe`` this connection also gets its
    later frames (how a client resumes after a reconnect); with ``after_seq``, the
    stored ``output`` chunks after it follow the response (streaming/output_delivery.py).

    Subscribing before reading closes the race with a worker finishing in between:
    either the read sees the final record, or the worker's terminal fan-out sees the
    subscription.
    """
    key = _key(ctx, payload.request_id)
    session = ctx.session
    if payload.after_seq is not None:
        session.guard.expect_output(payload.request_id, payload.after_seq)
    if payload.subscribe:
        await run_storage(
            subscription_store.subscribe,
            key.as_string(),
            session.connection_id,
            session.transport,
            session.address,
        )
        session.subscriptions.add(key.as_string())
    try:
        record = await run_storage(request_store.get, key)
    except NotFound:
        if payload.subscribe:
            await run_storage(
                subscription_store.unsubscribe, key.as_string(), session.connection_id
            )
            session.subscriptions.discard(key.as_string())
        if payload.after_seq is not None:
            session.guard.end_replay(payload.request_id)
        raise _not_found() from None
    if record.status in FINAL:
        session.guard.mark_final(record.request_id)
    if payload.after_seq is not None:
        await replay_output(session, key, payload.after_seq)
    return record.public()


@action("request.cancel", schema=RequestRef)
async def request_cancel(ctx: ActionContext, payload: RequestRef) -> dict[str, Any]:
    """Cancel the caller's request if it has not finished; subscribers then get its
    terminal ``error`` frame with code CANCELLED."""
    key = _key(ctx, payload.request_id)
    try:
        record = await cancel_request(key)
    except NotFound:
        raise _not_found() from None
    except InvalidTransition:
        try:
            return (await run_storage(request_store.get, key)).public()
        except NotFound:
            raise _not_found() from None
    return record.public()


async def cancel_request(key: RequestKey) -> RequestRecord:
    """Cancel a request that has not finished, whoever asks (its user or an admin).

    One conditional write (``request_store.cancel``), then the worker holding it is told
    to stop and its sender and subscribers get the terminal ``error`` frame, code
    CANCELLED. Raises NotFound, or InvalidTransition when it had already ended (nothing
    is sent then).
    """
    record = await run_storage(request_store.cancel, key)
    await notify_cancelled(key.as_string())
    await send_terminal(
        record, frames.error(record.request_id, ErrorCode.CANCELLED, "Request cancelled")
    )
    return record


@action("request.list", schema=ListPayload)
async def request_list(ctx: ActionContext, payload: ListPayload) -> dict[str, Any]:
    """The caller's own requests, newest first, with a cursor."""
    try:
        page = await run_storage(
            request_store.list_by_user,
            ctx.tenant_id,
            ctx.user_id,
            status=payload.status,
            limit=payload.limit,
            cursor=payload.cursor,
        )
    except StoreValidationError:
        # status and limit were validated above: the cursor is what the store refused
        raise validation_error([{"field": "payload.cursor", "message": "invalid cursor"}]) from None
    return {"requests": [r.public() for r in page.items], "cursor": page.cursor}


def origin_of(record: RequestRecord) -> Target | None:
    """Where the sender of a request was connected."""
    if not record.connection_id or not record.origin_transport:
        return None
    return Target(record.connection_id, record.origin_transport, record.origin_address)


async def send_terminal(record: RequestRecord, frame: dict[str, Any]) -> None:
    """Deliver a request's terminal frame to its sender and all current subscribers."""
    await manager.send_to_request(
        record.key.as_string(), frame, origin=origin_of(record), fresh=True
    )
