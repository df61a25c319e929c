"""The webhook outbox, in DynamoDB: one item per event to deliver, with its attempts.

Table ``webhooks``, keyed by ``delivery_id`` (the Standard Webhooks ``webhook-id``,
``msg_…``, derived from the event so that writing the same event twice stores it once).
An item holds the exact JSON body to POST (fixed when the event happened, so every
retry sends the same bytes), its state and the last :data:`MAX_ATTEMPTS_KEPT` attempts.

* PENDING: waiting to be sent. ``due_shard``/``next_attempt_at`` put it in the sparse,
  sharded ``due`` index that senders query.
* A sender *claims* an item with one conditional UpdateItem (``next_attempt_at <= now``)
  that moves ``next_attempt_at`` one lease ahead: two senders never send it at once, and
  a sender killed mid-attempt leaves an item that is due again when the lease ends.
* After the attempt (conditioned on still holding the claim) it is DELIVERED (2xx),
  PENDING again with the next backoff time, or FAILED once ``deadline_at`` has passed.
  DELIVERED/FAILED items leave the ``due`` index.
* ``resend`` (the admin's action) makes any item PENDING and due now, with a new deadline.

No transactions (dynalite has none): every step is a single conditional write.
Items expire (DynamoDB TTL) :data:`RETENTION_MS` after they were created.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from storage.base import (
    Page,
    decode_cursor,
    encode_cursor,
    now_ms,
    register_model,
)
from storage.error_mapping import ConditionFailed, storage_call
from storage.errors import NotFound
from storage.requests.model import JSONValueAttribute
from storage.validators import require_text

#: Pending deliveries are spread over this many partitions of the ``due`` index.
SHARDS = 4
#: Attempts kept per delivery (the oldest are dropped; ``attempt_count`` counts all).
MAX_ATTEMPTS_KEPT = 50
#: How long an event is retried before it is given up (docs/jobs.md, Webhooks: a day).
RETRY_WINDOW_MS = 24 * 60 * 60 * 1000
#: Deliveries disappear (TTL) this long after they were created.
RETENTION_MS = 30 * 24 * 60 * 60 * 1000
#: Longest error text kept for one attempt.
MAX_ERROR_CHARS = 200


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


def delivery_id_for(tenant_id: str, user_id: str, request_id: str, ended_at: int) -> str:
    """The ``webhook-id`` of the event "this request ended at ``ended_at``": the same for
    every retry, and for a second write of the same event (so it is stored once); a
    request an admin re-ran ends at another time, so that end is a new event."""
    digest = hashlib.sha256(f"{tenant_id}\0{user_id}\0{request_id}\0{ended_at}".encode())
    return f"msg_{digest.hexdigest()[:32]}"


def _shard(delivery_id: str) -> str:
    return str(int(hashlib.sha256(delivery_id.encode()).hexdigest()[:8], 16) % SHARDS)


class WebhookDueIndex(GlobalSecondaryIndex["WebhookDeliveryModel"]):
    """Sparse, sharded queue of pending deliveries by the time they are due."""

    class Meta:
        index_name = "due"
        projection = AllProjection()

    due_shard = UnicodeAttribute(hash_key=True)
    next_attempt_at = NumberAttribute(range_key=True)


class WebhookByTenantIndex(GlobalSecondaryIndex["WebhookDeliveryModel"]):
    """A tenant's deliveries, newest first (the admin's list)."""

    class Meta:
        index_name = "by_tenant"
        projection = AllProjection()

    tenant_id = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


@register_model
class WebhookDeliveryModel(Model):
    """One event to POST to a tenant's webhook endpoint (see the module docstring)."""

    class Meta:
        table_name = "webhooks"

    delivery_id = UnicodeAttribute(hash_key=True)
    tenant_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    request_id = UnicodeAttribute()
    event_type = UnicodeAttribute()
    body = UnicodeAttribute()
    status = UnicodeAttribute()
    created_at = NumberAttribute()
    deadline_at = NumberAttribute()
    attempt_count = NumberAttribute(default=0)
    attempts = JSONValueAttribute(null=True)
    claimed_by = UnicodeAttribute(null=True)
    due_shard = UnicodeAttribute(null=True)
    next_attempt_at = NumberAttribute(null=True)
    ttl = TTLAttribute(null=True)

    due = WebhookDueIndex()
    by_tenant = WebhookByTenantIndex()


@dataclass(frozen=True)
class Attempt:
    """One POST: when, what came back (``status_code`` None: no answer) and why it failed."""

    at: int
    status_code: int | None
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The stored form (also what the admin page shows)."""
        return {"at": self.at, "status_code": self.status_code, "error": self.error}


@dataclass(frozen=True)
class Delivery:
    """The plain view of one outbox item."""

    delivery_id: str
    tenant_id: str
    user_id: str
    request_id: str
    event_type: str
    body: str
    status: DeliveryStatus
    created_at: int
    deadline_at: int
    attempt_count: int
    attempts: list[Attempt] = field(default_factory=list)
    claimed_by: str | None = None
    next_attempt_at: int | None = None


def _to_delivery(item: WebhookDeliveryModel) -> Delivery:
    return Delivery(
        delivery_id=item.delivery_id,
        tenant_id=item.tenant_id,
        user_id=item.user_id,
        request_id=item.request_id,
        event_type=item.event_type,
        body=item.body,
        status=DeliveryStatus(item.status),
        created_at=int(item.created_at),
        deadline_at=int(item.deadline_at),
        attempt_count=int(item.attempt_count or 0),
        attempts=[Attempt(**a) for a in (item.attempts or [])],
        claimed_by=item.claimed_by,
        next_attempt_at=int(item.next_attempt_at) if item.next_attempt_at is not None else None,
    )


M = WebhookDeliveryModel


class WebhookStore:
    """Operations on the outbox; each is one DynamoDB call."""

    def add(
        self,
        *,
        delivery_id: str,
        tenant_id: str,
        user_id: str,
        request_id: str,
        event_type: str,
        body: str,
        now: int | None = None,
    ) -> bool:
        """Store a new PENDING delivery, due now (one conditional UpdateItem). False when
        it was already stored (the same event written twice), which leaves it untouched."""
        for name, value in (
            ("delivery_id", delivery_id),
            ("tenant_id", tenant_id),
            ("user_id", user_id),
            ("request_id", request_id),
            ("event_type", event_type),
        ):
            require_text(name, value, 256)
        at = now_ms() if now is None else now
        # UpdateItem, not PutItem: the roles that end requests (deploy/cloudformation.yaml)
        # need only UpdateItem on this table, the one write they already make elsewhere.
        actions: list[Action] = [
            M.tenant_id.set(tenant_id),
            M.user_id.set(user_id),
            M.request_id.set(request_id),
            M.event_type.set(event_type),
            M.body.set(body),
            M.status.set(DeliveryStatus.PENDING.value),
            M.created_at.set(at),
            M.deadline_at.set(at + RETRY_WINDOW_MS),
            M.attempt_count.set(0),
            M.attempts.set([]),
            M.due_shard.set(_shard(delivery_id)),
            M.next_attempt_at.set(at),
            M.ttl.set(datetime.fromtimestamp((at + RETENTION_MS) / 1000, tz=UTC)),
        ]
        try:
            with storage_call("webhooks.add"):
                M(delivery_id).update(actions=actions, condition=M.delivery_id.does_not_exist())
        except ConditionFailed:
            return False
        return True

    def due(self, shard: int, now: int | None = None, limit: int = 25) -> list[str]:
        """Ids of pending deliveries of one shard whose time has come, oldest first."""
        at = now_ms() if now is None else now
        with storage_call("webhooks.due"):
            rows = M.due.query(str(shard), M.next_attempt_at <= at, limit=limit)
            return [row.delivery_id for row in rows]

    def claim(
        self, delivery_id: str, sender_id: str, lease_ms: int, now: int | None = None
    ) -> Delivery | None:
        """Take a due delivery for one attempt (one conditional UpdateItem); None when it
        is not due or not pending any more (another sender took it, or it was sent)."""
        at = now_ms() if now is None else now
        item = M(delivery_id)
        try:
            with storage_call("webhooks.claim"):
                item.update(
                    actions=[M.next_attempt_at.set(at + lease_ms), M.claimed_by.set(sender_id)],
                    condition=(M.status == DeliveryStatus.PENDING.value)
                    & (M.next_attempt_at <= at),
                )
        except ConditionFailed:
            return None
        return _to_delivery(item)

    def record_attempt(
        self,
        claimed: Delivery,
        sender_id: str,
        attempt: Attempt,
        *,
        delivered: bool,
        next_attempt_at: int | None,
    ) -> Delivery | None:
        """Store the outcome of an attempt on a delivery this sender claimed: DELIVERED,
        PENDING again at ``next_attempt_at``, or FAILED when that is None. None when the
        claim was lost meanwhile (its lease ran out, or an admin resent it)."""
        kept = [*(a.as_dict() for a in claimed.attempts), attempt.as_dict()]
        actions: list[Action] = [
            M.attempts.set(kept[-MAX_ATTEMPTS_KEPT:]),
            M.attempt_count.add(1),
            M.claimed_by.remove(),
        ]
        if delivered or next_attempt_at is None:
            status = DeliveryStatus.DELIVERED if delivered else DeliveryStatus.FAILED
            actions += [M.status.set(status.value), M.due_shard.remove()]
            actions.append(M.next_attempt_at.remove())
        else:
            actions.append(M.next_attempt_at.set(next_attempt_at))
        item = M(claimed.delivery_id)
        try:
            with storage_call("webhooks.record_attempt"):
                item.update(
                    actions=actions,
                    condition=(M.claimed_by == sender_id)
                    & (M.status == DeliveryStatus.PENDING.value),
                )
        except ConditionFailed:
            return None
        return _to_delivery(item)

    def resend(self, delivery_id: str, now: int | None = None) -> Delivery:
        """Send a delivery again from now on, whatever its state, for another day (the
        admin's action); the ``webhook-id`` stays the same. NotFound when missing."""
        require_text("delivery_id", delivery_id, 256)
        at = now_ms() if now is None else now
        item = M(delivery_id)
        try:
            with storage_call("webhooks.resend"):
                item.update(
                    actions=[
                        M.status.set(DeliveryStatus.PENDING.value),
                        M.deadline_at.set(at + RETRY_WINDOW_MS),
                        M.due_shard.set(_shard(delivery_id)),
                        M.next_attempt_at.set(at),
                        M.claimed_by.remove(),
                    ],
                    condition=M.delivery_id.exists(),
                )
        except ConditionFailed:
            raise NotFound("webhook delivery not found") from None
        return _to_delivery(item)

    def get(self, delivery_id: str) -> Delivery:
        """One delivery; NotFound when missing."""
        require_text("delivery_id", delivery_id, 256)
        try:
            with storage_call("webhooks.get"):
                return _to_delivery(M.get(delivery_id))
        except DoesNotExist:
            raise NotFound("webhook delivery not found") from None

    def list_by_tenant(
        self, tenant_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Delivery]:
        """A tenant's deliveries, newest first, one page at a time."""
        require_text("tenant_id", tenant_id, 256)
        with storage_call("webhooks.list"):
            rows = M.by_tenant.query(
                tenant_id,
                scan_index_forward=False,
                limit=limit,
                last_evaluated_key=decode_cursor(cursor),
            )
            items = [_to_delivery(row) for row in rows]
            return Page(items, encode_cursor(rows.last_evaluated_key))


webhook_store = WebhookStore()
