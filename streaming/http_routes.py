"""The endpoints of ``/api/v1/`` (mounted by :mod:`streaming.http_api`): their body,
query and answer schemas, which also make the OpenAPI document.

Every endpoint acts for the tenant of the caller's API key only: a user id names a user
of that tenant, so another tenant's request is simply not found.
"""

from __future__ import annotations

from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from pydantic import ConfigDict, StringConstraints, model_validator

from connections.models import ApiKey
from connections.publishing import Audience, PublishError, build_frame, publish
from protocol.errors import ErrorCode, ProtocolError
from storage.requests.model import RequestStatus
from streaming import requests_api

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class PublishIn(Schema):
    """``connection_id`` or ``user_id`` (or neither: the whole tenant) and the frame."""

    connection_id: Id | None = None
    user_id: Id | None = None
    frame: Any = None

    @model_validator(mode="after")
    def one_audience(self) -> PublishIn:
        if self.connection_id is not None and self.user_id is not None:
            raise ValueError("Give connection_id or user_id, not both")
        return self


class PublishOut(Schema):
    delivered: int
    gone: int
    failed: int
    relayed: bool  # also sent to the other server processes (their sockets not counted)


class StartIn(Schema):
    """A request to start for ``user_id`` (docs/protocol.md §2.1's fields)."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id
    action: str = Field(..., description="An asynchronous action")
    payload: dict[str, Any] | None = None
    id: str | None = Field(None, description="Your id: a repeated id is refused (409)")
    metadata: dict[str, Any] | None = None


class ErrorDetail(Schema):
    code: str
    message: str
    details: dict[str, Any] | None = None
    retryable: bool


class ErrorOut(Schema):
    error: ErrorDetail


class RecordError(Schema):
    code: str
    message: str


class RecordOut(Schema):
    """The public record of a request (docs/protocol.md §3): ``result`` once COMPLETED,
    ``error`` once FAILED or CANCELLED."""

    request_id: str
    action: str
    status: RequestStatus
    percentage: float
    message: str
    created_at: int
    started_at: int | None
    ended_at: int | None
    result: Any = None
    error: RecordError | None = None


class PageOut(Schema):
    requests: list[RecordOut]
    cursor: str | None


class ListQuery(Schema):
    status: RequestStatus | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, max_length=2048)


ERRORS = {code: ErrorOut for code in (400, 401, 403, 404, 409, 429, 503)}


def caller(request: HttpRequest) -> ApiKey:
    """The API key that authenticated ``request``."""
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    return key


publish_router = Router(tags=["publish"])
requests_router = Router(tags=["requests"])


@publish_router.post("/publish", response={200: PublishOut, 400: ErrorOut, 503: ErrorOut})
async def publish_frame(request: HttpRequest, body: PublishIn) -> dict[str, int | bool]:
    """Send a frame to one connection, one user's connections or the whole tenant."""
    try:
        frame = build_frame(body.frame)
    except PublishError as exc:
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
    audience = Audience(caller(request).tenant_id, body.connection_id, body.user_id)
    report = await publish(audience, frame)
    return {
        "delivered": report.delivered,
        "gone": len(report.gone),
        "failed": len(report.failed),
        "relayed": report.relayed,
    }


@requests_router.post("", response={202: RecordOut, **ERRORS}, exclude_unset=True)
async def start_request(request: HttpRequest, body: StartIn) -> Status:
    """Start an asynchronous action for a user; 202 with its record. The user follows
    it live on any socket (``request.status`` with ``subscribe``, or ``request.watch``)."""
    record = await requests_api.astart(
        caller(request).tenant_id,
        body.user_id,
        body.action,
        body.payload,
        request_id=body.id,
        metadata=body.metadata,
    )
    return Status(202, record)


@requests_router.get("/{user_id}", response={200: PageOut, **ERRORS}, exclude_unset=True)
async def list_requests(
    request: HttpRequest, user_id: str, query: Query[ListQuery]
) -> dict[str, Any]:
    """The user's requests, newest first; pass ``cursor`` back for the next page."""
    return await requests_api.alist_requests(
        caller(request).tenant_id,
        user_id,
        status=query.status,
        limit=query.limit,
        cursor=query.cursor,
    )


@requests_router.get(
    "/{user_id}/{request_id}", response={200: RecordOut, **ERRORS}, exclude_unset=True
)
async def get_request(request: HttpRequest, user_id: str, request_id: str) -> dict[str, Any]:
    """One of the user's requests."""
    return await requests_api.aget(caller(request).tenant_id, user_id, request_id)


@requests_router.post(
    "/{user_id}/{request_id}/cancel", response={200: RecordOut, **ERRORS}, exclude_unset=True
)
async def cancel_request(request: HttpRequest, user_id: str, request_id: str) -> dict[str, Any]:
    """Cancel the request if it has not ended; its record either way."""
    return await requests_api.acancel(caller(request).tenant_id, user_id, request_id)
