"""The DynamoDB item of one asynchronous request, and the plain values the rest of the
code handles instead of PynamoDB objects (:class:`RequestKey`, :class:`RequestRecord`).

Table ``requests`` (prefixed by the store configuration), one item per request:

* hash key ``owner`` = ``f"{tenant_id}#{user_id}"``, range key ``request_id``. Tenant
  ids are slugs without ``#``, so the owner splits unambiguously at its first ``#``, and
  request ids are scoped to one user: two users (or two tenants) sending the same id
  never clash (docs/protocol.md §2.1).
* LSI ``by_created`` (``owner``, ``created_at``): a user's requests newest first, with
  a cursor, without a scan (``request.list``).
* sparse GSI ``due`` (``due_shard``, ``due_at``): the work queue. Only requests that
  are not final carry ``due_shard``/``due_at``, so the index holds live work only:

  - PENDING / RETRYING: ``due_at`` is when the request may run (now, or the retry time);
  - PROCESSING: ``due_at`` is the expiry of the worker's lease, so the request of a
    worker that died becomes due again by itself and another worker reclaims it;
  - COMPLETED / FAILED / CANCELLED: both attributes are removed, the item leaves the
    index.

  ``due_shard`` is a stable hash (CRC-32) of ``owner#request_id`` modulo the number of
  shards ("0".."N-1"). One index partition for all pending work would be a hot key
  every worker polls and every enqueue writes; spreading it over N shards spreads that
  load, and a poller simply queries the N shards and merges them by ``due_at``. The
  shard is fixed at enqueue time: the shard count may be raised later, never lowered
  (pollers must query at least as many shards as were ever used).
* KEYS_ONLY GSI ``by_tenant`` (``tenant_id``, ``created_at``): a tenant's requests
  newest first, for the admin. Keys only keeps the index small; the store reads the
  items themselves with BatchGetItem.

Every time is an integer number of milliseconds since the Unix epoch (sortable), except
``ttl``: DynamoDB TTL wants epoch seconds, and it is set to ``ended_at`` + 7 days when a
request ends (docs/protocol.md §5). JSON-valued attributes (payload, metadata, progress
details, result, error) are stored as orjson-encoded strings.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote, unquote

import orjson
from pynamodb.attributes import Attribute, NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.constants import STRING
from pynamodb.indexes import (
    AllProjection,
    GlobalSecondaryIndex,
    KeysOnlyProjection,
    LocalSecondaryIndex,
)
from pynamodb.models import Model

from storage.base import owner_of, register_model
from storage.errors import ValidationError

DEFAULT_SHARDS = 4
"""Shards of the ``due`` index (``settings.STREAMER_QUEUE_SHARDS`` overrides it)."""

RECORD_TTL_S = 7 * 24 * 3600
"""How long a request's record stays after it ends (docs/protocol.md §5)."""


class RequestStatus(StrEnum):
    """Status of a request (docs/protocol.md §3)."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    RETRYING = "RETRYING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL: frozenset[RequestStatus] = frozenset(
    {RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED}
)
"""Statuses a request never leaves."""

ALLOWED: dict[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.PENDING: frozenset({RequestStatus.PROCESSING, RequestStatus.CANCELLED}),
    RequestStatus.PROCESSING: frozenset(
        {
            RequestStatus.COMPLETED,
            RequestStatus.FAILED,
            RequestStatus.RETRYING,
            RequestStatus.CANCELLED,
        }
    ),
    RequestStatus.RETRYING: frozenset(
        {RequestStatus.PROCESSING, RequestStatus.FAILED, RequestStatus.CANCELLED}
    ),
    RequestStatus.COMPLETED: frozenset(),
    RequestStatus.FAILED: frozenset(),
    RequestStatus.CANCELLED: frozenset(),
}
"""Allowed transitions, exactly docs/protocol.md §3 (PROCESSING → PROCESSING, a reclaim of
an expired lease, is not a status change)."""


def shard_for(owner: str, request_id: str, shards: int = DEFAULT_SHARDS) -> str:
    """The ``due`` shard of a request: stable across processes and Python versions."""
    return str(zlib.crc32(f"{owner}#{request_id}".encode()) % shards)


@dataclass(frozen=True)
class RequestKey:
    """What identifies a request: it belongs to one user of one tenant."""

    tenant_id: str
    user_id: str
    request_id: str

    @property
    def owner(self) -> str:
        """The table's hash key for this request."""
        return owner_of(self.tenant_id, self.user_id)

    def as_string(self) -> str:
        """A stable, unique, reversible string for this key (subscription keys, groups).

        The three parts are joined by ``#`` after percent-escaping, so ids that contain
        ``#`` or ``%`` cannot collide: ``acme#alice#42`` for plain ids.
        """
        return "#".join(quote(part, safe="") for part in self._parts())

    @classmethod
    def from_string(cls, value: str) -> RequestKey:
        """Inverse of :meth:`as_string`; anything else is a ValidationError."""
        parts = value.split("#") if isinstance(value, str) else []
        if len(parts) != 3 or not all(parts):
            raise ValidationError("invalid request key")
        tenant_id, user_id, request_id = (unquote(part) for part in parts)
        return cls(tenant_id=tenant_id, user_id=user_id, request_id=request_id)

    def _parts(self) -> tuple[str, str, str]:
        return (self.tenant_id, self.user_id, self.request_id)


@dataclass(frozen=True)
class RequestRecord:
    """A request as stored, detached from PynamoDB (times in epoch ms)."""

    tenant_id: str
    user_id: str
    request_id: str
    action: str
    status: RequestStatus
    payload: Any
    metadata: dict[str, Any] | None
    percentage: float
    message: str
    details: Any
    result: Any
    error: dict[str, Any] | None
    attempts: int
    max_attempts: int
    timeout_s: float | None
    lease_owner: str | None
    lease_expires_at: int | None
    created_at: int
    started_at: int | None
    ended_at: int | None
    connection_id: str
    origin_transport: str
    origin_address: str
    due_shard: str | None = None
    due_at: int | None = None
    ttl: int | None = None
    requeued_at: int | None = None
    output_seq: int = 0
    output_bytes: int = 0

    @property
    def key(self) -> RequestKey:
        """The key of this request."""
        return RequestKey(self.tenant_id, self.user_id, self.request_id)

    @property
    def is_final(self) -> bool:
        """True once the request completed, failed or was cancelled."""
        return self.status in FINAL

    def public(self) -> dict[str, Any]:
        """The public record of docs/protocol.md §3 (what ``request.status``/``list`` return)."""
        data: dict[str, Any] = {
            "request_id": self.request_id,
            "action": self.action,
            "status": str(self.status),
            "percentage": self.percentage,
            "message": self.message,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }
        if self.output_seq:  # absent: no output chunk written yet
            data["output_seq"] = self.output_seq
        if self.status is RequestStatus.COMPLETED:
            data["result"] = self.result
        elif self.status in (RequestStatus.FAILED, RequestStatus.CANCELLED):
            error = self.error or {}
            default_code = (
                "CANCELLED" if self.status is RequestStatus.CANCELLED else "PROCESSING_FAILED"
            )
            data["error"] = {
                "code": str(error.get("code") or default_code),
                "message": str(error.get("message") or "Request failed"),
            }
        return data


class JSONValueAttribute(Attribute[Any]):
    """Any JSON value, stored as an orjson-encoded string."""

    attr_type = STRING

    def serialize(self, value: Any) -> str:
        """Encode ``value`` (dicts, lists, str, numbers, bools) as compact JSON."""
        return orjson.dumps(value).decode()

    def deserialize(self, value: str) -> Any:
        """Decode the stored JSON text."""
        return orjson.loads(value)


class ByCreatedIndex(LocalSecondaryIndex["RequestModel"]):
    """A user's requests ordered by creation time."""

    class Meta:
        index_name = "by_created"
        projection = AllProjection()

    owner = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


class DueIndex(GlobalSecondaryIndex["RequestModel"]):
    """Sparse, sharded queue of work that is due (see the module docstring)."""

    class Meta:
        index_name = "due"
        projection = AllProjection()

    due_shard = UnicodeAttribute(hash_key=True)
    due_at = NumberAttribute(range_key=True)


class ByTenantIndex(GlobalSecondaryIndex["RequestModel"]):
    """A tenant's requests ordered by creation time (keys only: the admin's list)."""

    class Meta:
        index_name = "by_tenant"
        projection = KeysOnlyProjection()

    tenant_id = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


@register_model
class RequestModel(Model):
    """One asynchronous request (see the module docstring for the layout)."""

    class Meta:
        table_name = "requests"

    owner = UnicodeAttribute(hash_key=True)
    request_id = UnicodeAttribute(range_key=True)
    tenant_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    action = UnicodeAttribute()
    status = UnicodeAttribute()
    payload = JSONValueAttribute(null=True)
    metadata = JSONValueAttribute(null=True)
    percentage = NumberAttribute(default=0)
    message = UnicodeAttribute(null=True)
    details = JSONValueAttribute(null=True)
    result = JSONValueAttribute(null=True)
    error = JSONValueAttribute(null=True)
    attempts = NumberAttribute(default=0)
    max_attempts = NumberAttribute(default=3)
    timeout_s = NumberAttribute(null=True)
    lease_owner = UnicodeAttribute(null=True)
    lease_expires_at = NumberAttribute(null=True)
    created_at = NumberAttribute()
    started_at = NumberAttribute(null=True)
    ended_at = NumberAttribute(null=True)
    connection_id = UnicodeAttribute(null=True)
    origin_transport = UnicodeAttribute(null=True)
    origin_address = UnicodeAttribute(null=True)
    due_shard = UnicodeAttribute(null=True)
    due_at = NumberAttribute(null=True)
    ttl = TTLAttribute(null=True)
    # When an admin last sent a FAILED/CANCELLED request back to PENDING (store.requeue).
    requeued_at = NumberAttribute(null=True)
    # The seq of the last output chunk stored (storage/requests/output.py).
    output_seq = NumberAttribute(null=True)
    output_bytes = NumberAttribute(null=True)  # their size, for the 8 MiB limit

    by_created = ByCreatedIndex()
    due = DueIndex()
    by_tenant = ByTenantIndex()

    def to_record(self) -> RequestRecord:
        """The plain, immutable view of this item."""
        ttl = self.ttl
        timeout_s = self.timeout_s
        return RequestRecord(
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            request_id=self.request_id,
            action=self.action,
            status=RequestStatus(self.status),
            payload=self.payload if self.payload is not None else {},
            metadata=self.metadata,
            percentage=float(self.percentage or 0),
            message=self.message or "",
            details=self.details,
            result=self.result,
            error=self.error,
            attempts=int(self.attempts or 0),
            max_attempts=int(self.max_attempts if self.max_attempts is not None else 3),
            timeout_s=float(timeout_s) if timeout_s is not None else None,
            lease_owner=self.lease_owner,
            lease_expires_at=_int_or_none(self.lease_expires_at),
            created_at=int(self.created_at),
            started_at=_int_or_none(self.started_at),
            ended_at=_int_or_none(self.ended_at),
            connection_id=self.connection_id or "",
            origin_transport=self.origin_transport or "",
            origin_address=self.origin_address or "",
            due_shard=self.due_shard,
            due_at=_int_or_none(self.due_at),
            ttl=int(ttl.timestamp()) if ttl is not None else None,
            requeued_at=_int_or_none(self.requeued_at),
            output_seq=int(self.output_seq or 0),
            output_bytes=int(self.output_bytes or 0),
        )


def _int_or_none(value: float | None) -> int | None:
    return int(value) if value is not None else None
