"""Start, read, list and cancel requests from server code (a view, a signal, a management
command, a Django Tasks ``@task``), for one user of one tenant.

::

    from streaming.requests_api import start, DuplicateRequest

    record = start("acme", "alice", "generate_report", {"steps": 5}, request_id="export-42")
    record["request_id"], record["status"]          # the public record (docs/protocol.md §3)

A request started here is a request like any other: the same checks as a ``request``
frame (the envelope, the action's schema, the user's and tenant's quotas), the same
durable queue, fair scheduling, worker, retries, progress and terminal frames. It has no
sender socket: its user follows it with ``request.status`` (``subscribe``) or
``request.watch`` on any of their connections, and it appears in ``request.list``.

Server code is trusted: the action's ``permission`` is NOT checked (it guards what a
client's token may start). The caller decides who the user is; check your own users'
rights before starting work for them.

Every function has a sync form (``start``) and an async form (``astart``); failures are
:class:`RequestError` (or a subclass) carrying the protocol's error ``code``,
``message``, ``details`` and ``retryable``.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from connections.storage_pool import run_storage
from protocol import codec
from protocol.errors import ErrorCode, ProtocolError, field_errors, validation_error
from protocol.parsing import ClientRequest, parse_frame
from storage.errors import InvalidTransition, NotFound, StorageUnavailable
from storage.errors import ValidationError as StoreValidationError
from storage.requests.model import RequestKey, RequestRecord, RequestStatus
from storage.requests.store import MAX_USER_ID, request_store
from streaming import lifecycle
from streaming.actions.registry import ActionRegistry, registry

__all__ = [
    "DuplicateRequest",
    "RequestError",
    "RequestNotFound",
    "acancel",
    "aget",
    "alist_requests",
    "astart",
    "cancel",
    "get",
    "list_requests",
    "start",
]


class RequestError(ProtocolError):
    """A request could not be started, read or cancelled: ``code`` is the error code
    of docs/protocol.md §4 (``VALIDATION_ERROR``, ``INVALID_ACTION``, ``QUOTA_EXCEEDED``,
    ``SERVICE_UNAVAILABLE`` …), ``retryable`` says whether trying again later may work."""


class DuplicateRequest(RequestError):
    """The user already has a request with this id (``DUPLICATE_REQUEST``); nothing was
    changed. ``existing_status`` is that request's status."""

    @property
    def existing_status(self) -> str | None:
        return (self.details or {}).get("status")


class RequestNotFound(RequestError):
    """No request with this id for this user (``NOT_FOUND``)."""


_TYPED: dict[ErrorCode, type[RequestError]] = {
    ErrorCode.DUPLICATE_REQUEST: DuplicateRequest,
    ErrorCode.NOT_FOUND: RequestNotFound,
}


def _typed(exc: ProtocolError) -> RequestError:
    return _TYPED.get(exc.code, RequestError)(exc.code, exc.message, exc.details)


class ListQuery(BaseModel):
    """The filters of :func:`alist_requests` (those of ``request.list``)."""

    model_config = ConfigDict(extra="forbid")
    status: RequestStatus | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=2048)


def _check_user(user_id: Any) -> str:
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID:
        raise validation_error(
            [{"field": "user_id", "message": f"must be a string of 1-{MAX_USER_ID} characters"}]
        )
    return user_id


def _parse(action: Any, payload: Any, request_id: Any, metadata: Any) -> ClientRequest:
    """The checks of a ``request`` frame (docs/protocol.md §2.1), applied to these values."""
    frame = {"action": action, "payload": payload, "id": request_id, "metadata": metadata}
    try:
        encoded = codec.dumps(frame)
    except codec.EncodeError:
        raise validation_error(
            [{"field": "payload", "message": "must hold only JSON values"}]
        ) from None
    return parse_frame(encoded)  # type: ignore[return-value]  # no "type": never a ping


async def astart(
    tenant_id: str,
    user_id: str,
    action: str,
    payload: dict[str, Any] | None = None,
    *,
    request_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    actions: ActionRegistry = registry,
) -> dict[str, Any]:
    """Start the asynchronous ``action`` for ``user_id`` of ``tenant_id``; returns its
    public record (``request_id`` is generated when none is given).

    Idempotent on ``request_id``: starting the same id again raises DuplicateRequest and
    changes nothing, so a retried call never runs the work twice. Only ``async`` actions
    can be started (a ``sync`` one answers at once and has no record): INVALID_ACTION.
    """
    try:
        user = _check_user(user_id)
        request = _parse(action, payload, request_id, metadata)
        # The one server-side entry of the request lifecycle: the action must be an
        # async one, its schema and the tenant's state and quotas are checked there.
        record = await lifecycle.enqueue(
            tenant_id=tenant_id,
            user_id=user,
            action=request.action,
            payload=request.payload,
            request_id=request.id,
            metadata=request.metadata,
            actions=actions,
        )
    except ProtocolError as exc:
        raise _typed(exc) from None
    except StorageUnavailable:
        raise RequestError(ErrorCode.SERVICE_UNAVAILABLE) from None
    return record.public()


async def aget(tenant_id: str, user_id: str, request_id: str) -> dict[str, Any]:
    """The public record of one of the user's requests; RequestNotFound when none."""
    return (await _read(RequestKey(tenant_id, user_id, request_id))).public()


async def alist_requests(
    tenant_id: str,
    user_id: str,
    *,
    status: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The user's requests newest first, as ``request.list`` answers:
    ``{"requests": [public records], "cursor": str | None}`` (pass the cursor back for
    the next page; None: no more)."""
    try:
        _check_user(user_id)
        query = ListQuery.model_validate({"status": status, "limit": limit, "cursor": cursor})
    except PydanticValidationError as exc:
        raise RequestError(
            ErrorCode.VALIDATION_ERROR,
            None,
            {"errors": field_errors(exc.errors(include_url=False, include_input=False))},
        ) from None
    except ProtocolError as exc:
        raise _typed(exc) from None
    try:
        page = await run_storage(
            request_store.list_by_user,
            tenant_id,
            user_id,
            status=query.status,
            limit=query.limit,
            cursor=query.cursor,
        )
    except StoreValidationError:
        raise _typed(validation_error([{"field": "cursor", "message": "invalid cursor"}])) from None
    except StorageUnavailable:
        raise RequestError(ErrorCode.SERVICE_UNAVAILABLE) from None
    return {"requests": [record.public() for record in page.items], "cursor": page.cursor}


async def acancel(tenant_id: str, user_id: str, request_id: str) -> dict[str, Any]:
    """Cancel one of the user's requests if it has not ended, and return its record.

    Its worker is told to stop and its subscribers get the terminal ``error`` frame
    (CANCELLED). A request that had already ended is left as it was (its record says
    how it ended); RequestNotFound when there is none.
    """
    key = RequestKey(tenant_id, user_id, request_id)
    try:
        return (await lifecycle.cancel(key)).public()
    except InvalidTransition:
        return (await _read(key)).public()
    except (NotFound, StoreValidationError):
        raise RequestNotFound(ErrorCode.NOT_FOUND) from None
    except StorageUnavailable:
        raise RequestError(ErrorCode.SERVICE_UNAVAILABLE) from None


async def _read(key: RequestKey) -> RequestRecord:
    try:
        return await run_storage(request_store.get, key)
    except (NotFound, StoreValidationError):
        # An id the store refuses (empty, too long) names no request either.
        raise RequestNotFound(ErrorCode.NOT_FOUND) from None
    except StorageUnavailable:
        raise RequestError(ErrorCode.SERVICE_UNAVAILABLE) from None


start = async_to_sync(astart)
"""Sync form of :func:`astart` (from a sync view, a signal handler, a command)."""
get = async_to_sync(aget)
"""Sync form of :func:`aget`."""
list_requests = async_to_sync(alist_requests)
"""Sync form of :func:`alist_requests`."""
cancel = async_to_sync(acancel)
"""Sync form of :func:`acancel`."""
