"""Webhook events: when a request ends, its tenant's endpoint is owed one signed POST.

:func:`request_ended` is the hook the places that end a request call right after the
final write (``streaming.lifecycle`` complete, fail and cancel). It stores the event in
the outbox (``storage/webhooks.py``) when the tenant has an endpoint; the sender
(``streaming/webhook_sender.py``) delivers it. The body is fixed here, once:

``{"type": "request.completed" | "request.failed" | "request.cancelled",
"timestamp": <ISO 8601 time the request ended>, "data": <public record + tenant_id +
user_id>}``
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from connections.storage_pool import run_storage
from connections.tenants import get_tenant_policy
from storage.requests.model import RequestRecord, RequestStatus
from storage.webhooks import delivery_id_for, webhook_store

log = logging.getLogger(__name__)

EVENT_TYPES = {
    RequestStatus.COMPLETED: "request.completed",
    RequestStatus.FAILED: "request.failed",
    RequestStatus.CANCELLED: "request.cancelled",
}


def event_body(record: RequestRecord) -> dict[str, Any]:
    """The JSON event of an ended request (see the module docstring)."""
    ended_at = record.ended_at if record.ended_at is not None else record.created_at
    return {
        "type": EVENT_TYPES[record.status],
        "timestamp": datetime.fromtimestamp(ended_at / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "data": {**record.public(), "tenant_id": record.tenant_id, "user_id": record.user_id},
    }


def record_event(record: RequestRecord) -> str | None:
    """Store the webhook event of an ended request when its tenant has an endpoint (one
    conditional PutItem; the same event twice is stored once). Returns the delivery id,
    or None when the tenant has no endpoint or the request has not ended."""
    if record.status not in EVENT_TYPES:
        return None
    policy = get_tenant_policy(record.tenant_id)
    if policy is None or not policy.webhook_url:
        return None
    ended_at = record.ended_at if record.ended_at is not None else record.created_at
    delivery_id = delivery_id_for(record.tenant_id, record.user_id, record.request_id, ended_at)
    body = event_body(record)
    webhook_store.add(
        delivery_id=delivery_id,
        tenant_id=record.tenant_id,
        user_id=record.user_id,
        request_id=record.request_id,
        event_type=body["type"],
        body=orjson.dumps(body).decode(),
    )
    return delivery_id


async def request_ended(record: RequestRecord) -> None:
    """Hook: ``record`` has just reached COMPLETED, FAILED or CANCELLED. Never raises:
    whatever fails here (storage down, a role without access to the table, the tenant
    database) is logged and must not keep the terminal frame from clients."""
    try:
        await run_storage(record_event, record)
    except Exception:
        log.exception("webhook event of request %s not stored", record.key.as_string())
