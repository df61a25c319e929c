"""Quotas of active asynchronous requests (docs/protocol.md §5, 1.1): per user and per tenant.

Table ``quotas``, hash key ``tenant_id``, range key ``holder``: one item per tenant
(``holder = "#tenant"``) and one per user holding requests (``"user#<user_id>"``). Each
item keeps the string SET ``active`` of the holds it counts:

* user item: ``"<created_at>:<request_id>"`` (the request's creation time in ms, so a
  hold says how old it is and a second attempt with the same id is a different member);
* tenant item: a 128-bit digest of (user_id, user member), so the tenant item stays
  small (about 24 bytes a hold) whatever the ids look like.

Taking a hold is ONE conditional UpdateItem per item::

    ADD active :m   IF NOT contains(active, :m)
                    AND (attribute_not_exists(active) OR size(active) < :limit)

DynamoDB evaluates the condition and applies the update of one item atomically, so
however many processes race, at most ``limit`` members are ever in the set: this is
what makes the limit hold across servers and workers (no transactions needed, which
dynalite lacks). Giving a hold back is ``DELETE active :m`` (idempotent). Order: user,
then tenant when taking; tenant, then user when giving back, so every tenant hold has
its user hold and a leak always shows up in a user item.

Leaks (a process died between the request's final write and the release, or between
taking a hold and storing the request) heal by themselves: when a hold is refused, the
members of the full item are checked against the request records (BatchGetItem,
bounded) and the ones whose request is final, missing for longer than any enqueue
takes, or of another attempt, are given back; then the hold is tried once more.
docs/quotas.md explains the design.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache
from pynamodb.attributes import UnicodeAttribute, UnicodeSetAttribute
from pynamodb.constants import ATTRIBUTES, NONE, UPDATED_NEW
from pynamodb.expressions.condition import Condition, size
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from storage.base import now_ms, register_model
from storage.error_mapping import ConditionFailed, storage_call
from storage.errors import StoreError, ValidationError
from storage.requests.model import RequestKey, RequestRecord

log = logging.getLogger(__name__)

TENANT_HOLDER = "#tenant"
USER_PREFIX = "user#"
# An item must stay under DynamoDB's 400 KB: a user member is at most ~530 bytes (13
# digits, ':' and 128 characters of up to 4 bytes), a tenant member 22. Larger limits
# set on a tenant are clamped to these.
MAX_USER_LIMIT = 500
MAX_TENANT_LIMIT = 10_000
# A hold whose request does not exist is only given back once it is older than this:
# younger, its enqueue may still be writing the request (botocore's bounded retries
# take well under a minute).
LEAK_GRACE_MS = 60_000
# A tenant-scope heal reads at most this many user items.
MAX_HEAL_USERS = 2_000

Lookup = Callable[[list[RequestKey]], list[RequestRecord]]


@register_model
class QuotaModel(Model):
    """The holds of one user or of a whole tenant (see the module docstring)."""

    class Meta:
        table_name = "quotas"

    tenant_id = UnicodeAttribute(hash_key=True)
    holder = UnicodeAttribute(range_key=True)
    active = UnicodeSetAttribute(null=True)


Q = QuotaModel


@dataclass(frozen=True)
class QuotaLimits:
    """How many active requests a user and its tenant may have."""

    per_user: int
    per_tenant: int


@dataclass(frozen=True)
class Hold:
    """What :meth:`QuotaStore.acquire` took, so that exactly that can be given back."""

    key: RequestKey
    created_at: int
    user: bool
    tenant: bool


class QuotaExceeded(StoreError):
    """The user or the tenant already has ``limit`` active requests."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"{scope} quota of {limit} active requests reached")
        self.scope = scope
        self.limit = limit


class _Full(Exception):
    def __init__(self, members: set[str]) -> None:
        self.members = members


def user_member(request_id: str, created_at: int) -> str:
    """The member that counts a request in its user's item."""
    return f"{created_at}:{request_id}"


def tenant_member(user_id: str, member: str) -> str:
    """The member that counts a request in its tenant's item (a digest of the user's)."""
    digest = hashlib.blake2b(f"{user_id}\x00{member}".encode(), digest_size=16).hexdigest()
    return digest


def _parse(member: str) -> tuple[int, str] | None:
    created_at, sep, request_id = member.partition(":")
    if not sep or not created_at.isdigit() or not request_id:
        return None
    return int(created_at), request_id


def _user_holder(user_id: str) -> str:
    return USER_PREFIX + user_id


def _clamp(limit: int, maximum: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError("a quota limit must be an integer >= 1")
    return min(limit, maximum)


class QuotaStore:
    """Takes and gives back holds; heals leaked ones when a limit is reached.

    ``lookup`` reads request records (consistently) for the heal. ``heal_cooldown_s``:
    after a heal of an item that freed nothing, this process does not heal that item
    again for that long (a user hammering a full quota costs one read per refusal,
    not a BatchGetItem each).
    """

    def __init__(self, lookup: Lookup, *, heal_cooldown_s: float = 2.0) -> None:
        self._lookup = lookup
        self._cooled: TTLCache[tuple[str, str], bool] = TTLCache(
            maxsize=10_000, ttl=heal_cooldown_s
        )
        self._lock = threading.Lock()

    # --- taking and giving back -------------------------------------------------------

    def acquire(
        self, key: RequestKey, created_at: int, limits: QuotaLimits, now: int | None = None
    ) -> Hold:
        """Count the request ``key`` (created at ``created_at``) against its user's and
        its tenant's limits: user first, then tenant.

        Raises QuotaExceeded (scope ``"user"`` or ``"tenant"``) when a limit is reached
        even after healing leaked holds; nothing is left held then. A member already
        held (the same attempt twice) is not counted twice and the returned Hold says it
        was not taken here, so giving it back never frees someone else's hold.
        StorageUnavailable when DynamoDB cannot be reached (what was taken is given back
        on a best-effort basis; what is not heals later).
        """
        per_user = _clamp(limits.per_user, MAX_USER_LIMIT)
        per_tenant = _clamp(limits.per_tenant, MAX_TENANT_LIMIT)
        now = now_ms() if now is None else now
        member = user_member(key.request_id, created_at)
        holder = _user_holder(key.user_id)
        took_user = self._take_or_heal(key.tenant_id, holder, member, per_user, now, "user")
        try:
            took_tenant = self._take_or_heal(
                key.tenant_id,
                TENANT_HOLDER,
                tenant_member(key.user_id, member),
                per_tenant,
                now,
                "tenant",
            )
        except BaseException:
            if took_user:
                self._give_back_quietly(key.tenant_id, holder, member)
            raise
        return Hold(key=key, created_at=created_at, user=took_user, tenant=took_tenant)

    def hold(self, key: RequestKey, created_at: int) -> None:
        """Count a request without any limit (an operator's requeue is an override)."""
        member = user_member(key.request_id, created_at)
        self._add(key.tenant_id, _user_holder(key.user_id), member, None)
        self._add(key.tenant_id, TENANT_HOLDER, tenant_member(key.user_id, member), None)

    def release(self, key: RequestKey, created_at: int) -> None:
        """Give back a request's holds (idempotent): tenant first, then user. A user
        item left empty is deleted, so a tenant's partition holds only users with
        active requests and a tenant-scope heal reads no history."""
        member = user_member(key.request_id, created_at)
        self._remove(key.tenant_id, TENANT_HOLDER, tenant_member(key.user_id, member))
        self._remove(key.tenant_id, _user_holder(key.user_id), member)

    def undo(self, hold: Hold) -> None:
        """Give back what ``hold`` took here, and nothing else (best effort)."""
        member = user_member(hold.key.request_id, hold.created_at)
        if hold.tenant:
            self._give_back_quietly(
                hold.key.tenant_id, TENANT_HOLDER, tenant_member(hold.key.user_id, member)
            )
        if hold.user:
            self._give_back_quietly(hold.key.tenant_id, _user_holder(hold.key.user_id), member)

    def held(self, tenant_id: str, user_id: str | None = None) -> set[str]:
        """The members a user's item (or, without ``user_id``, the tenant's) holds."""
        holder = TENANT_HOLDER if user_id is None else _user_holder(user_id)
        return self._members(tenant_id, holder)

    # --- healing ------------------------------------------------------------------

    def _take_or_heal(
        self, tenant_id: str, holder: str, member: str, limit: int, now: int, scope: str
    ) -> bool:
        try:
            return self._add(tenant_id, holder, member, limit)
        except _Full as full:
            if not self._heal(tenant_id, holder, full.members, now):
                raise QuotaExceeded(scope, limit) from None
        try:
            return self._add(tenant_id, holder, member, limit)
        except _Full:
            raise QuotaExceeded(scope, limit) from None

    def _heal(self, tenant_id: str, holder: str, members: set[str], now: int) -> int:
        """Give back the stale holds of a full item; how many were freed."""
        with self._lock:
            if (tenant_id, holder) in self._cooled:
                return 0
        if holder == TENANT_HOLDER:
            users = self._holding_users(tenant_id)
        else:
            users = {holder.removeprefix(USER_PREFIX): members}
        freed = self._heal_users(tenant_id, users, now)
        if not freed:
            with self._lock:
                self._cooled[(tenant_id, holder)] = True
        return freed

    def _heal_users(self, tenant_id: str, users: dict[str, set[str]], now: int) -> int:
        parsed = {
            (user_id, member): _parse(member) for user_id, held in users.items() for member in held
        }
        keys = [
            RequestKey(tenant_id, user_id, value[1])
            for (user_id, _), value in parsed.items()
            if value is not None
        ]
        records = {record.key: record for record in self._lookup(keys)} if keys else {}
        freed = 0
        for (user_id, member), value in parsed.items():
            record = records.get(RequestKey(tenant_id, user_id, value[1])) if value else None
            if not _stale(value, record, now):
                continue
            log.info("quota: giving back a leaked hold of tenant %s", tenant_id)
            self._remove(tenant_id, TENANT_HOLDER, tenant_member(user_id, member))
            self._remove(tenant_id, _user_holder(user_id), member)
            freed += 1
        return freed

    def _holding_users(self, tenant_id: str) -> dict[str, set[str]]:
        """Every user of the tenant with holds (bounded by :data:`MAX_HEAL_USERS`)."""
        users: dict[str, set[str]] = {}
        with storage_call("quota_heal"):
            for item in Q.query(
                tenant_id,
                range_key_condition=Q.holder.startswith(USER_PREFIX),
                consistent_read=True,
                limit=MAX_HEAL_USERS,
            ):
                if item.active:
                    users[item.holder.removeprefix(USER_PREFIX)] = set(item.active)
        return users

    # --- single items -----------------------------------------------------------------

    def _add(self, tenant_id: str, holder: str, member: str, limit: int | None) -> bool:
        """True when ``member`` was added now, False when it was already there;
        _Full (with the members) when the item is at ``limit``."""
        condition: Condition = ~Q.active.contains(member)
        if limit is not None:
            condition &= Q.active.does_not_exist() | (size(Q.active) < limit)
        try:
            _update(tenant_id, holder, Q.active.add({member}), condition, "quota_acquire", NONE)
            return True
        except ConditionFailed:
            members = self._members(tenant_id, holder)
            if member in members:
                return False
            raise _Full(members) from None

    def _remove(self, tenant_id: str, holder: str, member: str) -> None:
        # Conditional, so giving back what is not held writes (and creates) nothing.
        try:
            left = _update(
                tenant_id,
                holder,
                Q.active.delete({member}),
                Q.active.contains(member),
                "quota_release",
                UPDATED_NEW,  # ``active`` only while members are left
            )
        except ConditionFailed:
            return
        if holder != TENANT_HOLDER and not left.get(ATTRIBUTES):
            try:
                with storage_call("quota_release"):
                    Q(tenant_id, holder).delete(condition=Q.active.does_not_exist())
            except ConditionFailed:
                pass  # a new hold arrived meanwhile: the item stays

    def _give_back_quietly(self, tenant_id: str, holder: str, member: str) -> None:
        try:
            self._remove(tenant_id, holder, member)
        except StoreError:
            log.warning("quota: could not give back a hold of tenant %s (heals later)", tenant_id)

    def _members(self, tenant_id: str, holder: str) -> set[str]:
        try:
            with storage_call("quota_read"):
                item = Q.get(tenant_id, holder, consistent_read=True)
        except Q.DoesNotExist:
            return set()
        return set(item.active or ())


def _update(
    tenant_id: str,
    holder: str,
    action: Action,
    condition: Condition,
    operation: str,
    return_values: str,
) -> dict[str, Any]:
    """ONE conditional UpdateItem that returns only what the caller needs: a tenant's
    item holds up to thousands of members, and Model.update would read them all back."""
    with storage_call(operation):
        return Q._get_connection().update_item(
            tenant_id,
            holder,
            actions=[action],
            condition=condition,
            return_values=return_values,
        )


def _stale(parsed: tuple[int, str] | None, record: RequestRecord | None, now: int) -> bool:
    """Whether a hold no longer counts an active request."""
    if parsed is None:
        return True  # not a member this code writes
    created_at, _ = parsed
    if record is not None and record.created_at == created_at:
        return record.is_final
    # The request is missing, or it is another attempt with the same id (which its
    # enqueue refuses as a duplicate): a leak once older than any enqueue takes.
    return now - created_at >= LEAK_GRACE_MS


def release_quietly(store: QuotaStore, record: RequestRecord) -> None:
    """Give back the holds of a request that just ended. A failure only leaks a hold,
    which the next refusal heals, so it is logged and never raised."""
    try:
        store.release(record.key, record.created_at)
    except StoreError:
        log.warning("quota: could not release request %s (heals later)", record.request_id)
