"""The request store: every read and state change of an asynchronous request.

Each state change is ONE conditional DynamoDB write whose condition encodes the allowed
transitions of docs/protocol.md §3, so two workers can never both claim a request, a
cancelled request can never complete, and an ``error`` can never be followed by a
``complete`` (docs/protocol.md §6). When a condition fails, one consistent read tells the
caller why (NotFound, InvalidTransition with the current status, or for ``claim``
simply ``None``). No transactions, TTL or streams are needed, so the embedded server
(dynalite) behaves like DynamoDB.

Arguments are validated before any network call (:class:`ValidationError`); transport
failures and throttling become :class:`StorageUnavailable`; no PynamoDB or botocore
exception leaves this module.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import math
import operator
import re
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticValidationError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from storage.base import Page, decode_cursor, encode_cursor, now_ms, owner_of
from storage.error_mapping import ConditionFailed as _ConditionFailed
from storage.error_mapping import storage_call as _storage
from storage.errors import (
    AlreadyExists,
    InvalidTransition,
    NotFound,
    StorageUnavailable,
    StoreError,
    ValidationError,
)
from storage.requests.model import (
    DEFAULT_SHARDS,
    RECORD_TTL_S,
    RequestKey,
    RequestModel,
    RequestRecord,
    RequestStatus,
    shard_for,
)
from storage.requests.quota import QuotaLimits, QuotaStore, release_quietly
from storage.validators import (
    MAX_CONNECTION_ID,
    MAX_USER_ID,
    MAX_WORKER_ID,
    optional_text,
    require_int,
    require_json,
    require_tenant,
    require_text,
)

log = logging.getLogger(__name__)
M = RequestModel
S = RequestStatus

MAX_REQUEST_ID = 128
MAX_LIST_LIMIT = 100
MAX_DUE_LIMIT = 1000
MAX_SHARDS = 256
MAX_ATTEMPTS = 100
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_ERROR_MESSAGE = 1000
# Encoded JSON sizes, chosen so that one item always stays under DynamoDB's 400 KB.
MAX_PAYLOAD_BYTES = 128 * 1024
MAX_METADATA_BYTES = 8 * 1024
MAX_RESULT_BYTES = 192 * 1024
MAX_DETAILS_BYTES = 16 * 1024
# list_by_tenant with a status filter examines at most this many index entries per call.
MAX_TENANT_SCAN = 1000
# list_due with excluded tenants reads at most DUE_SCAN_PAGES pages of DUE_SCAN_PAGE
# index entries per shard per call: a backlog of 4 x 5 x 250 = 5,000 entries of the
# excluded tenants (4 shards) is looked past in one poll.
DUE_SCAN_PAGE = 250
DUE_SCAN_PAGES = 5
_MAX_IN = 100
# Items one request.list call with a status filter examines at most (3 pages of 100).
MAX_USER_SCAN = 300

_ACTION_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_WAITING = (S.PENDING.value, S.RETRYING.value)
_LIVE = (S.PENDING.value, S.PROCESSING.value, S.RETRYING.value)
CANCELLED_ERROR = {"code": "CANCELLED", "message": "Request cancelled"}


# --- validation (never touches the network) -------------------------------------------


def _check_key(key: RequestKey) -> RequestKey:
    if not isinstance(key, RequestKey):
        raise ValidationError("key must be a RequestKey")
    require_tenant(key.tenant_id)
    require_text("user_id", key.user_id, MAX_USER_ID)
    require_text("request_id", key.request_id, MAX_REQUEST_ID)
    return key


def _check_now(now: int | None) -> int:
    return now_ms() if now is None else require_int("now", now, 0)


def _error_value(code: Any, message: Any) -> dict[str, str]:
    require_text("code", code, 64)
    if not isinstance(message, str):
        raise ValidationError("message must be a string")
    return {"code": code, "message": message[:MAX_ERROR_MESSAGE]}


def _check_percentage(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValidationError("percentage must be a number")
    return float(min(100.0, max(0.0, value)))


def _ttl_for(ended_at: int, ttl_s: int) -> datetime:
    return datetime.fromtimestamp(ended_at // 1000 + ttl_s, tz=UTC)


def _owned_by(condition: Condition, worker_id: str | None) -> Condition:
    """``condition`` AND (the lease belongs to ``worker_id``, when one is given)."""
    return condition if worker_id is None else condition & (M.lease_owner == worker_id)


def _final_actions(status: RequestStatus, now: int, ttl_s: int) -> list[Action]:
    """What every move to a final state writes: the item leaves the ``due`` index and
    expires ``ttl_s`` seconds after it ended."""
    return [
        M.status.set(status.value),
        M.ended_at.set(now),
        M.ttl.set(_ttl_for(now, ttl_s)),
        M.due_shard.remove(),
        M.due_at.remove(),
        M.lease_owner.remove(),
        M.lease_expires_at.remove(),
    ]


# --- cursors ---------------------------------------------------------------------------
# A cursor comes back from clients: pydantic checks its decoded shape (strict types, no
# extra keys). Enqueue and claim keep the hand-written checks of storage.validators: a
# pydantic model of enqueue's arguments measured 8.4 µs per call against 2.0 µs, and its
# error texts would need mapping to the messages every store shares.


class _UserCursor(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    r: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REQUEST_ID)]
    c: Annotated[int, Field(ge=0)]


class _TenantCursor(_UserCursor):
    u: Annotated[str, StringConstraints(min_length=1, max_length=MAX_USER_ID)]


_C = TypeVar("_C", bound=_UserCursor)


def _parse_cursor(shape: type[_C], cursor: str | None) -> _C | None:
    value = decode_cursor(cursor)
    if value is None:
        return None
    try:
        return shape.model_validate(value)
    except PydanticValidationError:
        raise ValidationError("invalid cursor") from None


def _cursor_for(record: RequestRecord) -> str | None:
    return encode_cursor({"r": record.request_id, "c": record.created_at})


def _start_key(owner: str, cursor: str | None) -> dict[str, dict[str, str]] | None:
    """The ``by_created`` ExclusiveStartKey of a :meth:`RequestStore.list_by_user` cursor."""
    value = _parse_cursor(_UserCursor, cursor)
    if value is None:
        return None
    return {
        "owner": {"S": owner},
        "request_id": {"S": value.r},
        "created_at": {"N": str(value.c)},
    }


def _entry_key(tenant_id: str, entry: RequestModel) -> RequestKey:
    """The key of a ``by_tenant`` index entry (keys only: owner, request_id, created_at)."""
    return RequestKey(tenant_id, entry.owner.partition("#")[2], entry.request_id)


def _tenant_cursor_for(entry: RequestModel) -> str | None:
    return encode_cursor(
        {
            "u": entry.owner.partition("#")[2],
            "r": entry.request_id,
            "c": int(entry.created_at),
        }
    )


def _tenant_start_key(tenant_id: str, cursor: str | None) -> dict[str, dict[str, str]] | None:
    """The ``by_tenant`` ExclusiveStartKey of a :meth:`RequestStore.list_by_tenant` cursor."""
    value = _parse_cursor(_TenantCursor, cursor)
    if value is None:
        return None
    return {
        "tenant_id": {"S": tenant_id},
        "created_at": {"N": str(value.c)},
        "owner": {"S": owner_of(tenant_id, value.u)},
        "request_id": {"S": value.r},
    }


class RequestStore:
    """Durable requests in DynamoDB (see the module docstring and ``model.py``).

    Requests enqueued with ``limits`` are counted in ``quotas`` (``quota.py``) while
    they are active; whoever wins the conditional write that ends a request (complete,
    fail, cancel) gives its holds back.
    """

    heal_cooldown_s = 2.0
    record_ttl_s = RECORD_TTL_S

    def __init__(self, *, heal_cooldown_s: float = 2.0, record_ttl_s: int = RECORD_TTL_S) -> None:
        self.heal_cooldown_s = heal_cooldown_s
        #: Seconds an ended request stays before DynamoDB's TTL removes it
        #: (``STREAMER_REQUEST_TTL_S`` sets it for the process-wide store).
        self.record_ttl_s = record_ttl_s

    @functools.cached_property
    def quotas(self) -> QuotaStore:
        """The quotas of this store's requests."""
        return QuotaStore(self._read_consistently, heal_cooldown_s=self.heal_cooldown_s)

    # --- creation and reads -----------------------------------------------------------

    def enqueue(
        self,
        *,
        tenant_id: str,
        user_id: str,
        request_id: str,
        action: str,
        payload: Any,
        metadata: dict[str, Any] | None = None,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        connection_id: str = "",
        origin_transport: str = "",
        origin_address: str = "",
        shards: int = DEFAULT_SHARDS,
        now: int | None = None,
        limits: QuotaLimits | None = None,
    ) -> RequestRecord:
        """Store a new PENDING request, due at once, with ONE conditional PutItem.

        ``origin_transport``/``origin_address`` say where the sender's socket is (a
        Channels channel name or an API Gateway endpoint) so any process can answer it.
        Raises AlreadyExists (with ``existing_status``) when this user already has a
        request with this id: nothing is overwritten.

        With ``limits`` the request first takes a hold in its user's and its tenant's
        quota (one conditional UpdateItem each); QuotaExceeded when either is full,
        and then nothing is stored. A refused or duplicate write gives the holds back;
        after StorageUnavailable the request may or may not have been written, so its
        holds stay and heal later if it was not (never counting too few).
        """
        require_tenant(tenant_id)
        require_text("user_id", user_id, MAX_USER_ID)
        require_text("request_id", request_id, MAX_REQUEST_ID)
        if not isinstance(action, str) or not _ACTION_RE.match(action):
            raise ValidationError("action must be 1-64 characters of A-Z a-z 0-9 . _ -")
        if not isinstance(payload, dict):
            raise ValidationError("payload must be an object")
        require_json("payload", payload, MAX_PAYLOAD_BYTES)
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise ValidationError("metadata must be an object")
            require_json("metadata", metadata, MAX_METADATA_BYTES)
        require_int("max_attempts", max_attempts, 1, MAX_ATTEMPTS)
        if timeout_s is not None and (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, int | float)
            or not 0 < timeout_s <= MAX_TIMEOUT_S
        ):
            raise ValidationError(f"timeout_s must be a number in (0, {MAX_TIMEOUT_S:g}]")
        optional_text("connection_id", connection_id, MAX_CONNECTION_ID)
        optional_text("origin_transport", origin_transport, 64)
        optional_text("origin_address", origin_address, 2048)
        require_int("shards", shards, 1, MAX_SHARDS)
        now = _check_now(now)

        owner = owner_of(tenant_id, user_id)
        hold = None
        if limits is not None:
            hold = self.quotas.acquire(RequestKey(tenant_id, user_id, request_id), now, limits, now)
        item = M(
            owner,
            request_id,
            tenant_id=tenant_id,
            user_id=user_id,
            action=action,
            status=S.PENDING.value,
            payload=payload,
            metadata=metadata,
            percentage=0,
            message=None,
            attempts=0,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            created_at=now,
            connection_id=connection_id or None,
            origin_transport=origin_transport or None,
            origin_address=origin_address or None,
            due_shard=shard_for(owner, request_id, shards),
            due_at=now,
        )
        try:
            with _storage("enqueue"):
                item.save(condition=M.owner.does_not_exist())
        except _ConditionFailed:
            if hold is not None:
                self.quotas.undo(hold)
            existing = self._find(RequestKey(tenant_id, user_id, request_id))
            raise AlreadyExists(
                "a request with this id already exists",
                existing_status=existing.status.value if existing else None,
            ) from None
        except StorageUnavailable:
            raise  # maybe written: the holds stay (a leak heals, a lost count would not)
        except BaseException:
            if hold is not None:
                self.quotas.undo(hold)
            raise
        return item.to_record()

    def get(self, key: RequestKey, consistent: bool = True) -> RequestRecord:
        """The request, read consistently by default; NotFound when it does not exist."""
        _check_key(key)
        record = self._find(key, consistent=consistent)
        if record is None:
            raise NotFound("request not found")
        return record

    def batch_get(self, keys: list[RequestKey], consistent: bool = False) -> list[RequestRecord]:
        """The requests that exist among ``keys``, in the order of ``keys`` (duplicates
        and missing ones skipped); BatchGetItem in chunks of 100."""
        unique = list(dict.fromkeys(_check_key(key) for key in keys))
        if not unique:
            return []
        with _storage("batch_get"):
            found = {
                (item.owner, item.request_id): item.to_record()
                for item in M.batch_get(
                    [(key.owner, key.request_id) for key in unique],
                    consistent_read=consistent,
                )
            }
        return [found[k] for k in ((key.owner, key.request_id) for key in unique) if k in found]

    # --- worker side ------------------------------------------------------------------

    def claim(
        self, key: RequestKey, worker_id: str, lease_ms: int, now: int | None = None
    ) -> RequestRecord | None:
        """Take the request for ``worker_id`` for ``lease_ms``: ONE conditional UpdateItem.

        Succeeds when the request is PENDING/RETRYING and due, or PROCESSING with an
        expired lease (its worker died); it becomes PROCESSING, ``attempts`` goes up by
        one (a caller that then sees ``attempts > max_attempts`` should ``fail`` it), and
        ``due_at`` becomes the lease expiry. Returns None when the condition fails
        (someone else holds it, not due yet, final, or missing): among concurrent
        claimers exactly one wins.
        """
        _check_key(key)
        require_text("worker_id", worker_id, MAX_WORKER_ID)
        require_int("lease_ms", lease_ms, 1)
        now = _check_now(now)
        expires = now + lease_ms
        condition = (M.status.is_in(*_WAITING) & (M.due_at <= now)) | (
            (M.status == S.PROCESSING.value) & (M.lease_expires_at <= now)
        )
        actions = [
            M.status.set(S.PROCESSING.value),
            M.lease_owner.set(worker_id),
            M.lease_expires_at.set(expires),
            M.due_at.set(expires),
            M.attempts.add(1),
            M.started_at.set(M.started_at | now),
        ]
        return self._update(key, actions, condition, "claim")

    def renew_lease(
        self, key: RequestKey, worker_id: str, lease_ms: int, now: int | None = None
    ) -> RequestRecord:
        """Extend ``worker_id``'s lease to now + ``lease_ms``.

        InvalidTransition (with the current status) when the request is no longer
        PROCESSING under this worker, e.g. it was cancelled or its lease was taken over:
        the worker must stop.
        """
        _check_key(key)
        require_text("worker_id", worker_id, MAX_WORKER_ID)
        require_int("lease_ms", lease_ms, 1)
        now = _check_now(now)
        expires = now + lease_ms
        condition = (M.status == S.PROCESSING.value) & (M.lease_owner == worker_id)
        actions = [M.lease_expires_at.set(expires), M.due_at.set(expires)]
        return self._transition(key, actions, condition, "renew the lease of")

    def update_progress(
        self,
        key: RequestKey,
        percentage: float,
        message: str = "",
        details: Any = None,
        worker_id: str | None = None,
    ) -> RequestRecord:
        """Persist progress of a PROCESSING request (percentage clamped to 0..100).

        The stored percentage never goes down: an update below it changes nothing and
        returns the stored record. InvalidTransition when the request is not PROCESSING
        (or, with ``worker_id``, not leased by that worker any more).
        """
        _check_key(key)
        value = _check_percentage(percentage)
        optional_text("message", message, MAX_ERROR_MESSAGE)
        if details is not None:
            require_json("details", details, MAX_DETAILS_BYTES)
        if worker_id is not None:
            require_text("worker_id", worker_id, MAX_WORKER_ID)
        condition = _owned_by((M.status == S.PROCESSING.value) & (M.percentage <= value), worker_id)
        actions = [
            M.percentage.set(value),
            M.message.set(message),
            M.details.set(details) if details is not None else M.details.remove(),
        ]
        record = self._update(key, actions, condition, "update_progress")
        if record is not None:
            return record
        current = self._require(key)
        if current.status is not S.PROCESSING or (
            worker_id is not None and current.lease_owner != worker_id
        ):
            raise self._invalid("report progress on", current)
        return current  # a lower percentage: ignored, progress never goes down

    def complete(
        self,
        key: RequestKey,
        result: Any,
        worker_id: str | None = None,
        now: int | None = None,
    ) -> RequestRecord:
        """PROCESSING → COMPLETED with ``result`` persisted, percentage 100.

        With ``worker_id`` the lease must still be that worker's. Otherwise (cancelled,
        already final, not started) InvalidTransition with the current status.
        """
        _check_key(key)
        require_json("result", result, MAX_RESULT_BYTES)
        if worker_id is not None:
            require_text("worker_id", worker_id, MAX_WORKER_ID)
        now = _check_now(now)
        condition = _owned_by(M.status == S.PROCESSING.value, worker_id)
        actions = [
            *_final_actions(S.COMPLETED, now, self.record_ttl_s),
            M.percentage.set(100),
            M.result.set(result) if result is not None else M.result.remove(),
            M.error.remove(),
        ]
        return self._ended(self._transition(key, actions, condition, "complete"))

    def fail(
        self,
        key: RequestKey,
        code: str,
        message: str,
        worker_id: str | None = None,
        now: int | None = None,
    ) -> RequestRecord:
        """PROCESSING | RETRYING → FAILED with ``error = {code, message}`` persisted.

        With ``worker_id`` a PROCESSING request must still be leased by that worker (a
        RETRYING one has no lease). Otherwise InvalidTransition with the current status.
        """
        _check_key(key)
        error = _error_value(code, message)
        if worker_id is not None:
            require_text("worker_id", worker_id, MAX_WORKER_ID)
        now = _check_now(now)
        condition = (M.status == S.RETRYING.value) | _owned_by(
            M.status == S.PROCESSING.value, worker_id
        )
        actions = [*_final_actions(S.FAILED, now, self.record_ttl_s), M.error.set(error)]
        return self._ended(self._transition(key, actions, condition, "fail"))

    def schedule_retry(
        self,
        key: RequestKey,
        retry_at_ms: int,
        code: str,
        message: str,
        worker_id: str | None = None,
    ) -> RequestRecord:
        """PROCESSING → RETRYING, due again at ``retry_at_ms``; the lease is released and
        the error that caused the retry is kept in ``error``.

        Whether another attempt is allowed (``attempts`` vs ``max_attempts``) is the
        caller's decision. InvalidTransition with the current status otherwise.
        """
        _check_key(key)
        require_int("retry_at_ms", retry_at_ms, 0)
        error = _error_value(code, message)
        if worker_id is not None:
            require_text("worker_id", worker_id, MAX_WORKER_ID)
        condition = _owned_by(M.status == S.PROCESSING.value, worker_id)
        actions = [
            M.status.set(S.RETRYING.value),
            M.due_at.set(retry_at_ms),
            M.error.set(error),
            M.lease_owner.remove(),
            M.lease_expires_at.remove(),
        ]
        return self._transition(key, actions, condition, "retry")

    # --- client side ------------------------------------------------------------------

    def cancel(self, key: RequestKey, now: int | None = None) -> RequestRecord:
        """PENDING | PROCESSING | RETRYING → CANCELLED (error code ``CANCELLED``).

        A worker holding it finds out at its next renew/progress/complete. Already final
        → InvalidTransition with the current status (callers return the record as is);
        missing → NotFound.
        """
        _check_key(key)
        now = _check_now(now)
        actions = [
            *_final_actions(S.CANCELLED, now, self.record_ttl_s),
            M.error.set(dict(CANCELLED_ERROR)),
        ]
        return self._ended(self._transition(key, actions, M.status.is_in(*_LIVE), "cancel"))

    def requeue(
        self, key: RequestKey, now: int | None = None, shards: int = DEFAULT_SHARDS
    ) -> RequestRecord:
        """FAILED | CANCELLED → PENDING: run an ended request again (an admin's retry).

        ONE conditional UpdateItem. The request keeps its id, payload, metadata,
        ``created_at``, origin and subscribers; ``attempts`` goes back to 0, error,
        result, progress, ``started_at``/``ended_at`` and the TTL are cleared,
        ``requeued_at`` is set and it is due at once in the ``due`` index. This is an
        operator override of docs/protocol.md §3 (final states are final for clients);
        docs/admin.md explains what clients see. COMPLETED or still live →
        InvalidTransition with the current status; missing → NotFound.
        """
        _check_key(key)
        require_int("shards", shards, 1, MAX_SHARDS)
        now = _check_now(now)
        actions = [
            M.status.set(S.PENDING.value),
            M.attempts.set(0),
            M.percentage.set(0),
            M.message.remove(),
            M.details.remove(),
            M.result.remove(),
            M.error.remove(),
            M.started_at.remove(),
            M.ended_at.remove(),
            M.ttl.remove(),
            M.lease_owner.remove(),
            M.lease_expires_at.remove(),
            M.due_shard.set(shard_for(key.owner, key.request_id, shards)),
            M.due_at.set(now),
            M.requeued_at.set(now),
        ]
        condition = M.status.is_in(S.FAILED.value, S.CANCELLED.value)
        record = self._transition(key, actions, condition, "requeue")
        try:
            # Counted again but not limited: an operator's retry overrides the quota.
            self.quotas.hold(key, record.created_at)
        except StoreError:
            log.warning("quota: could not count requeued request %s", key.request_id)
        return record

    def list_by_user(
        self,
        tenant_id: str,
        user_id: str,
        *,
        status: RequestStatus | str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> Page[RequestRecord]:
        """A user's requests, newest first, through the ``by_created`` index.

        Without ``status`` a page costs one query. With ``status`` items are read 100 at
        a time until ``limit`` match or :data:`MAX_USER_SCAN` items were examined, so
        one call's storage work is bounded however long the user's history: a page may
        then hold fewer than ``limit`` requests (even none) and still carry a cursor.
        ``cursor`` continues a previous page; the returned cursor is None only when
        nothing is left.
        """
        require_tenant(tenant_id)
        require_text("user_id", user_id, MAX_USER_ID)
        require_int("limit", limit, 1, MAX_LIST_LIMIT)
        wanted: RequestStatus | None = None
        if status is not None:
            try:
                wanted = RequestStatus(status)
            except ValueError:
                raise ValidationError("unknown status") from None
        owner = owner_of(tenant_id, user_id)
        start_key = _start_key(owner, cursor)
        matches: list[RequestRecord] = []
        last: RequestRecord | None = None  # the last item examined: the next cursor
        examined = 0
        more = False
        with _storage("list_by_user"):
            # One item more than a page, so that peeking past it costs no extra query.
            items = M.by_created.query(
                owner,
                scan_index_forward=False,
                consistent_read=True,
                page_size=(limit if wanted is None else MAX_LIST_LIMIT) + 1,
                last_evaluated_key=start_key,
            )
            for item in items:
                if len(matches) == limit or examined >= MAX_USER_SCAN:
                    more = True
                    break
                examined += 1
                last = item.to_record()
                if wanted is None or last.status is wanted:
                    matches.append(last)
        next_cursor = _cursor_for(last) if more and last is not None else None
        return Page(items=matches, cursor=next_cursor)

    def list_by_tenant(
        self,
        tenant_id: str,
        *,
        status: RequestStatus | str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> Page[RequestRecord]:
        """A tenant's requests (every user), newest first: the admin's list.

        Reads the KEYS_ONLY ``by_tenant`` index, then the items with BatchGetItem, in
        index order. Without ``status`` a page costs one index query and one
        BatchGetItem. With ``status`` (not in the index, so it is checked on the items)
        index entries are read 100 at a time until ``limit`` match or
        :data:`MAX_TENANT_SCAN` entries were examined: a page may then hold fewer than
        ``limit`` requests (even none) and still carry a cursor. The cursor is None only
        when nothing is left. An entry whose item is gone (index lag) is skipped.
        """
        require_tenant(tenant_id)
        require_int("limit", limit, 1, MAX_LIST_LIMIT)
        wanted: RequestStatus | None = None
        if status is not None:
            try:
                wanted = RequestStatus(status)
            except ValueError:
                raise ValidationError("unknown status") from None
        start_key = _tenant_start_key(tenant_id, cursor)
        matches: list[RequestRecord] = []
        last: RequestModel | None = None  # the last index entry examined: the next cursor
        examined = 0
        more = False
        with _storage("list_by_tenant"):
            entries = iter(
                M.by_tenant.query(
                    tenant_id,
                    scan_index_forward=False,
                    # One more than a page, so that peeking past it costs no extra query.
                    page_size=(limit if wanted is None else MAX_LIST_LIMIT) + 1,
                    last_evaluated_key=start_key,
                )
            )
            while True:
                if len(matches) == limit or examined >= MAX_TENANT_SCAN:
                    more = next(entries, None) is not None
                    break
                size = limit - len(matches) if wanted is None else MAX_LIST_LIMIT
                chunk = list(itertools.islice(entries, size))
                if not chunk:
                    break
                keys = [_entry_key(tenant_id, entry) for entry in chunk]
                found = {record.key: record for record in self.batch_get(keys)}
                for entry, key in zip(chunk, keys, strict=True):
                    if len(matches) == limit:
                        more = True  # entries of this chunk are left
                        break
                    examined += 1
                    last = entry
                    record = found.get(key)  # None: gone since the index saw it
                    if record is not None and (wanted is None or record.status is wanted):
                        matches.append(record)
                if more:
                    break
        next_cursor = _tenant_cursor_for(last) if more and last is not None else None
        return Page(items=matches, cursor=next_cursor)

    # --- queue ------------------------------------------------------------------------

    def list_due(
        self,
        now: int | None = None,
        limit: int = 100,
        shards: int = DEFAULT_SHARDS,
        exclude_tenants: Collection[str] = (),
    ) -> list[RequestRecord]:
        """Requests due by ``now``, oldest ``due_at`` first, across every shard.

        That is PENDING/RETRYING requests whose time has come and PROCESSING ones whose
        lease expired (to be reclaimed). Reads the ``due`` index (eventually
        consistent): ``claim`` is the authority.

        ``exclude_tenants`` leaves those tenants' requests out (a worker's tenants at
        their share, streaming/fairness.py), so other tenants' work is found behind
        their backlog. DynamoDB filters after reading, so each shard then reads at most
        :data:`DUE_SCAN_PAGES` pages of :data:`DUE_SCAN_PAGE` entries per call.
        """
        if not exclude_tenants:
            return self._query_due(now, limit, shards, None)
        excluded = sorted(set(exclude_tenants))
        for tenant_id in excluded:
            require_tenant(tenant_id)
        # DynamoDB allows at most 100 operands in one IN.
        condition = functools.reduce(
            operator.and_,
            (
                ~M.tenant_id.is_in(*excluded[i : i + _MAX_IN])
                for i in range(0, len(excluded), _MAX_IN)
            ),
        )
        return self._query_due(now, limit, shards, condition, max_pages=DUE_SCAN_PAGES)

    def list_pending(
        self, limit: int = 100, shards: int = DEFAULT_SHARDS, now: int | None = None
    ) -> list[RequestRecord]:
        """The PENDING/RETRYING part of :meth:`list_due`, oldest first (pass a far
        future ``now`` to also see retries scheduled later)."""
        return self._query_due(now, limit, shards, M.status.is_in(*_WAITING))

    # --- internals --------------------------------------------------------------------

    def _ended(self, record: RequestRecord) -> RequestRecord:
        """The request just reached a final state by our write: give its holds back."""
        release_quietly(self.quotas, record)
        return record

    def _read_consistently(self, keys: list[RequestKey]) -> list[RequestRecord]:
        return self.batch_get(keys, consistent=True)

    def _query_due(
        self,
        now: int | None,
        limit: int,
        shards: int,
        filter_condition: Condition | None,
        max_pages: int | None = None,
    ) -> list[RequestRecord]:
        require_int("limit", limit, 1, MAX_DUE_LIMIT)
        require_int("shards", shards, 1, MAX_SHARDS)
        now = _check_now(now)
        per_shard: list[list[RequestRecord]] = []
        with _storage("list_due"):
            for shard in range(shards):
                query = M.due.query(
                    str(shard),
                    range_key_condition=M.due_at <= now,
                    filter_condition=filter_condition,
                    scan_index_forward=True,
                    limit=limit,
                    page_size=DUE_SCAN_PAGE if max_pages is not None else None,
                )
                if max_pages is None:
                    per_shard.append([item.to_record() for item in query])
                else:
                    per_shard.append(_bounded(query.page_iter, limit, max_pages))
        merged: Iterator[RequestRecord] = heapq.merge(
            *per_shard, key=lambda r: (r.due_at or 0, r.created_at)
        )
        return [record for _, record in zip(range(limit), merged, strict=False)]

    def _find(self, key: RequestKey, consistent: bool = True) -> RequestRecord | None:
        try:
            with _storage("get"):
                item = M.get(key.owner, key.request_id, consistent_read=consistent)
        except M.DoesNotExist:
            return None
        return item.to_record()

    def _require(self, key: RequestKey) -> RequestRecord:
        record = self._find(key)
        if record is None:
            raise NotFound("request not found")
        return record

    def _update(
        self, key: RequestKey, actions: Sequence[Action], condition: Condition, operation: str
    ) -> RequestRecord | None:
        """ONE conditional UpdateItem returning ALL_NEW; None when the condition fails."""
        item = M(key.owner, key.request_id)
        try:
            with _storage(operation):
                item.update(actions=list(actions), condition=condition)
        except _ConditionFailed:
            return None
        return item.to_record()

    def _transition(
        self, key: RequestKey, actions: Sequence[Action], condition: Condition, verb: str
    ) -> RequestRecord:
        record = self._update(key, actions, condition, verb)
        if record is not None:
            return record
        raise self._invalid(verb, self._require(key))

    @staticmethod
    def _invalid(verb: str, current: RequestRecord) -> InvalidTransition:
        if current.status is S.PROCESSING:
            reason = f"cannot {verb} the request: its lease belongs to another worker"
        else:
            reason = f"cannot {verb} a request that is {current.status.value}"
        return InvalidTransition(reason, current_status=current.status.value)


def _bounded(pages: Iterator[dict[str, Any]], limit: int, max_pages: int) -> list[RequestRecord]:
    """Up to ``limit`` records from at most ``max_pages`` raw query pages."""
    records: list[RequestRecord] = []
    for page in itertools.islice(pages, max_pages):
        records.extend(M.from_raw_data(raw).to_record() for raw in page.get("Items", []))
        if len(records) >= limit:
            break
    return records[:limit]


request_store = RequestStore()
"""The process-wide store."""
