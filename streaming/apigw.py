"""API Gateway WebSocket events, handled by the same pipeline as the Channels consumer.

API Gateway holds the sockets and sends us one event per connect, frame and disconnect
(through Lambda — see :mod:`streaming.lambda_handlers` — or the HTTP endpoint
``POST /apigw/events``). Replies go back with ``PostToConnection`` through the
``apigw`` transport. Workers are triggered by DynamoDB Streams on the requests table
(:func:`handle_stream_event`) and claim exactly as ``process_requests`` does.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from cachetools import LRUCache

from connections.expiry import close_one
from connections.manager import manager
from connections.storage_pool import run_storage
from connections.transports.apigw import SEPARATOR
from connections.transports.apigw_endpoint import (
    EndpointPolicy,
    EndpointRefused,
    check_connection_id,
)
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound, StorageUnavailable
from storage.requests.model import RequestKey, RequestStatus
from streaming.auth import TOKEN_EXPIRED, AuthFailure, Identity, extract_token
from streaming.edge import apigw_edge
from streaming.output_delivery import send_replays_after_reply
from streaming.session import Session, active_policy
from streaming.worker import Worker

log = logging.getLogger(__name__)

TRANSPORT = "apigw"
HTTP_STATUS = {4401: 401, 4403: 403, 4429: 429, 1011: 503}
_CACHE_S = 60.0
_MAX_CACHED = 10_000


class _SessionCache:
    """Sessions of this container, bounded (least recently used forgotten first): fresh
    for a minute, then re-checked against the stored record and tenant policy
    (``_session_for``) while keeping their state (rate limiter, delivery guard)."""

    def __init__(self) -> None:
        # Used by the event loop of the process only (no lock needed). Entries keep
        # their check time: an expiring cache would drop the state with the freshness.
        self._items: LRUCache[str, tuple[float, Session]] = LRUCache(_MAX_CACHED)

    def get(self, connection_id: str) -> Session | None:
        """The session when it was checked less than a minute ago."""
        hit = self._items.get(connection_id)
        if hit is None or time.monotonic() - hit[0] >= _CACHE_S:
            return None
        return hit[1]

    def put(self, session: Session) -> None:
        self._items[session.connection_id] = (time.monotonic(), session)

    def stale(self, connection_id: str) -> Session | None:
        """The session whatever its age (its state outlives the re-check)."""
        hit = self._items.get(connection_id)
        return None if hit is None else hit[1]

    def drop(self, connection_id: str) -> None:
        self._items.pop(connection_id, None)


sessions = _SessionCache()


def _context(event: dict[str, Any]) -> dict[str, Any]:
    context = event.get("requestContext")
    if not isinstance(context, dict) or not context.get("connectionId"):
        raise ValueError("not an API Gateway WebSocket event")
    return context


def _address(context: dict[str, Any]) -> str:
    """The connection's Management API URL: the configured endpoint, or the event's
    ``domainName``/``stage`` only when they name an allowed API Gateway endpoint
    (:class:`EndpointPolicy`); :class:`EndpointRefused` otherwise."""
    connection_id = check_connection_id(context["connectionId"])
    endpoint = EndpointPolicy.from_settings().endpoint_for(
        context.get("domainName"), context.get("stage")
    )
    return f"{endpoint}{SEPARATOR}{connection_id}"


def _lower_headers(event: dict[str, Any]) -> dict[str, str]:
    headers = event.get("headers") or {}
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _query(event: dict[str, Any]) -> dict[str, list[str]]:
    multi = event.get("multiValueQueryStringParameters")
    if isinstance(multi, dict):
        return {str(k): [str(v) for v in vs] for k, vs in multi.items() if isinstance(vs, list)}
    single = event.get("queryStringParameters") or {}
    return {str(k): [str(v)] for k, v in single.items()}


async def handle_websocket_event(event: dict[str, Any]) -> dict[str, Any]:
    """Handle one ``$connect``/``$disconnect``/``$default`` event; returns the proxy
    response API Gateway expects (statusCode 200, or 401/403/429/503 on refusal)."""
    try:
        context = _context(event)
    except ValueError:
        return {"statusCode": 400, "body": "Bad event"}
    route = context.get("routeKey") or context.get("eventType")
    if route in ("$connect", "CONNECT"):
        return await _connect(event, context)
    if route in ("$disconnect", "DISCONNECT"):
        return await _disconnect(context)
    return await _message(event, context)


async def _connect(event: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    identity_info = context.get("identity") or {}
    try:
        address = _address(context)  # a forged endpoint is refused before any token work
        session = await apigw_edge.connect(
            extract_token(_query(event), _lower_headers(event)),
            connection_id=context["connectionId"],
            address=address,
            user_agent=str(identity_info.get("userAgent") or ""),
            source_ip=identity_info.get("sourceIp"),
        )
    except AuthFailure as failure:
        return {"statusCode": HTTP_STATUS.get(failure.close_code, 401), "body": failure.reason}
    except EndpointRefused:
        return {"statusCode": 403, "body": "Unknown API Gateway endpoint"}
    sessions.put(session)
    return {"statusCode": 200}


async def _disconnect(context: dict[str, Any]) -> dict[str, Any]:
    try:
        address = _address(context)
    except EndpointRefused:
        return {"statusCode": 403, "body": "Unknown connection"}
    session = sessions.get(context["connectionId"])
    sessions.drop(context["connectionId"])
    if session is not None and (session.transport, session.address) == (TRANSPORT, address):
        apigw_edge.forgotten(session)
    # Only this API's own record: a forged event naming a daphne socket removes nothing.
    # Every subscription goes, also those made through other containers.
    await manager.forget(context["connectionId"], at=(TRANSPORT, address))
    return {"statusCode": 200}


def _check_same_socket(transport: str, address: str, event_address: str) -> None:
    """An API Gateway event may only act for an API Gateway connection of its own
    endpoint: a record of another transport (a daphne socket) or another API is not
    this socket, and using it would let the event act as that record's user."""
    if transport != TRANSPORT or address != event_address:
        raise NotFound("not an API Gateway connection of this endpoint")


async def _session_for(context: dict[str, Any]) -> Session:
    """The connection's session: cached, or rebuilt from its record when this container
    has none or its check is older than the cache time. A re-check re-reads the record
    and the tenant policy but keeps the session's rate limiter, inbound budget and
    delivery guard, as a socket held by our own servers does."""
    connection_id = context["connectionId"]
    event_address = _address(context)
    session = sessions.get(connection_id)
    if session is not None:
        _check_same_socket(session.transport, session.address, event_address)
        return session
    info: ConnectionInfo = await run_storage(connection_store.get, connection_id)
    _check_same_socket(info.transport, info.address, event_address)
    identity = Identity(info.tenant_id, info.user_id, frozenset(info.permissions), info.expires_at)
    policy = await active_policy(info.tenant_id)
    session = sessions.stale(connection_id)
    if session is not None and session.identity.tenant_id == identity.tenant_id:
        session.refresh(identity, policy)
    else:
        session = Session.start(identity, info.connection_id, info.transport, info.address, policy)
    sessions.put(session)
    return session


async def _message(event: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    try:
        session = await _session_for(context)
    except (NotFound, AuthFailure, EndpointRefused):
        return {"statusCode": 403, "body": "Unknown connection"}
    except StorageUnavailable:
        return {"statusCode": 503, "body": "Service unavailable"}
    if session.identity.expired():
        # No timer runs in Lambda: an expired token is noticed at the next frame (or by
        # the sweep, connections.expiry) and the socket is deleted, frame unanswered.
        sessions.drop(session.connection_id)
        apigw_edge.forgotten(session)
        await close_one(session.connection_id, session.transport, session.address)
        return {"statusCode": 401, "body": TOKEN_EXPIRED}
    body = event.get("body")
    binary = bool(event.get("isBase64Encoded"))
    data: str | bytes | None = body
    if binary and isinstance(body, str):
        try:
            data = base64.b64decode(body)
        except ValueError:
            data = b""
    replies = await apigw_edge.receive(session, data, binary=binary)
    for frame in replies:
        await manager.send_to_target(session.target, frame)
    await send_replays_after_reply(session.connection_id)
    return {"statusCode": 200}


_deserializer = TypeDeserializer()


def decode_image(image: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB Streams typed image ({"S": ...}, {"N": ...}) as plain values."""
    return {k: _deserializer.deserialize(v) for k, v in image.items()}


def runnable_keys(event: dict[str, Any]) -> list[RequestKey]:
    """Requests in a Streams batch that a worker should try to claim (new or retrying)."""
    keys: list[RequestKey] = []
    for record in event.get("Records") or []:
        if record.get("eventName") not in ("INSERT", "MODIFY"):
            continue
        image = (record.get("dynamodb") or {}).get("NewImage")
        if not isinstance(image, dict):
            continue
        try:
            item = decode_image(image)
        except (TypeError, ValueError, KeyError):
            log.warning("undecodable stream image skipped")
            continue
        if item.get("status") not in (RequestStatus.PENDING, RequestStatus.RETRYING):
            continue
        tenant, user, request_id = (
            item.get("tenant_id"),
            item.get("user_id"),
            item.get("request_id"),
        )
        if isinstance(tenant, str) and isinstance(user, str) and isinstance(request_id, str):
            keys.append(RequestKey(tenant, user, request_id))
    return keys


async def handle_stream_event(
    event: dict[str, Any], worker: Worker | None = None
) -> dict[str, Any]:
    """Run the requests a DynamoDB Streams batch announces. The claim is the same
    conditional update as ``process_requests``, so a duplicate delivery never runs a
    request twice."""
    worker = worker or Worker.from_settings()
    keys = runnable_keys(event)
    results = await asyncio.gather(*(worker.run_one(key) for key in keys))
    return {"claimed": sum(results), "seen": len(keys)}
