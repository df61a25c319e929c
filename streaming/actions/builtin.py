"""Actions every deployment has (docs/protocol.md §3): echo and the request.* family."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connections.storage_pool import run_storage
from protocol.errors import ErrorCode, ProtocolError, validation_error
from storage.errors import InvalidTransition, NotFound
from storage.errors import ValidationError as StoreValidationError
from storage.requests.model import FINAL, RequestKey, RequestStatus
from storage.requests.store import request_store
from storage.subscription import subscription_store
from streaming import lifecycle
from streaming.actions.registry import ActionContext, action
from streaming.output_delivery import replay_output

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
    """Cancel the caller's request if it has not finished (:func:`lifecycle.cancel`);
    subscribers then get its terminal ``error`` frame with code CANCELLED."""
    key = _key(ctx, payload.request_id)
    try:
        record = await lifecycle.cancel(key)
    except NotFound:
        raise _not_found() from None
    except InvalidTransition:
        try:
            return (await run_storage(request_store.get, key)).public()
        except NotFound:
            raise _not_found() from None
    return record.public()


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
