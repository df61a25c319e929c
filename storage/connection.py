"""The registry of live WebSocket connections, in DynamoDB.

One item per connection, keyed by ``connection_id``. Four global secondary indexes
answer every question without a scan:

* ``by_tenant`` (``tenant_id``, ``connected_at``): a tenant's connections, newest first,
  their count (connection limit) and fan-out to a tenant;
* ``by_user`` (``owner`` = ``"{tenant_id}#{user_id}"``, ``connected_at``): a user's
  connections, for fan-out to a user;
* ``by_last_seen`` (``stale_shard``, ``last_seen``): connections not seen for a while,
  for the periodic cleanup. The hash key is one of 8 shards derived from a stable hash of
  the connection id, so the index has no single hot partition; the cleanup queries each
  shard with ``last_seen < cutoff``.
* ``by_expiry`` (``stale_shard``, ``expires_at``), sparse: when each connection's token
  expires, so the sweep closes API Gateway sockets whose token ran out (a Lambda has no
  timer to do it; our own consumer closes its sockets itself).

Every item also carries a DynamoDB TTL one day after it was last seen, so connections
that nobody cleaned up expire on their own where the endpoint supports TTL.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pynamodb.attributes import (
    ListAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.exceptions import DoesNotExist
from pynamodb.indexes import (
    AllProjection,
    GlobalSecondaryIndex,
    IncludeProjection,
    KeysOnlyProjection,
)
from pynamodb.models import Model

from storage.base import (
    Page,
    decode_cursor,
    encode_cursor,
    now_ms,
    owner_of,
    register_model,
)
from storage.batching import delete_in_batches
from storage.error_mapping import ConditionFailed, storage_call
from storage.errors import NotFound, ValidationError
from storage.validators import (
    MAX_CONNECTION_ID,
    MAX_USER_ID,
    require_choice,
    require_int,
    require_strings,
    require_tenant,
    require_text,
)

#: Transports a connection can be held by.
TRANSPORTS = frozenset({"channels", "apigw"})
#: Number of hash-key shards of the ``by_last_seen`` index.
STALE_SHARDS = 8
#: A connection item expires (DynamoDB TTL) this long after it was last seen.
CONNECTION_TTL_MS = 24 * 60 * 60 * 1000
#: Largest page a list call accepts.
MAX_PAGE = 100
#: Longest user agent kept (longer ones are truncated).
MAX_USER_AGENT = 512
#: Longest address (channel name or API Gateway endpoint URL).
MAX_ADDRESS = 2048

_BATCH = 25  # DynamoDB BatchWriteItem limit: deletes per call, and per progress report
_ITER_PAGE = 100  # page size of the iter_* fan-out queries


def stale_shard_of(connection_id: str) -> str:
    """The ``by_last_seen`` shard ("0".."7") of a connection: stable across processes."""
    return str(zlib.crc32(connection_id.encode("utf-8")) % STALE_SHARDS)


def _ttl_at(ms: int) -> datetime:
    return datetime.fromtimestamp((ms + CONNECTION_TTL_MS) / 1000, tz=UTC)


class ByTenantIndex(GlobalSecondaryIndex["ConnectionModel"]):
    """A tenant's connections, ordered by connection time."""

    class Meta:
        index_name = "by_tenant"
        projection = AllProjection()

    tenant_id = UnicodeAttribute(hash_key=True)
    connected_at = NumberAttribute(range_key=True)


class ByUserIndex(GlobalSecondaryIndex["ConnectionModel"]):
    """A user's connections (``owner`` = tenant#user), ordered by connection time."""

    class Meta:
        index_name = "by_user"
        projection = AllProjection()

    owner = UnicodeAttribute(hash_key=True)
    connected_at = NumberAttribute(range_key=True)


class ByLastSeenIndex(GlobalSecondaryIndex["ConnectionModel"]):
    """Connections per shard ordered by last activity: keys only, for the cleanup."""

    class Meta:
        index_name = "by_last_seen"
        projection = KeysOnlyProjection()

    stale_shard = UnicodeAttribute(hash_key=True)
    last_seen = NumberAttribute(range_key=True)


class ByExpiryIndex(GlobalSecondaryIndex["ConnectionModel"]):
    """Connections per shard ordered by token expiry, with what closing them needs."""

    class Meta:
        index_name = "by_expiry"
        projection = IncludeProjection(["transport", "address"])

    stale_shard = UnicodeAttribute(hash_key=True)
    expires_at = NumberAttribute(range_key=True)


@register_model
class ConnectionModel(Model):
    """One live WebSocket connection (times are epoch milliseconds)."""

    class Meta:
        table_name = "connections"

    connection_id = UnicodeAttribute(hash_key=True)
    tenant_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    owner = UnicodeAttribute()
    transport = UnicodeAttribute()
    address = UnicodeAttribute()
    permissions = ListAttribute(of=UnicodeAttribute, default=list)
    connected_at = NumberAttribute()
    last_seen = NumberAttribute()
    # Empty strings are stored as absent (older DynamoDB-compatible servers refuse them).
    user_agent = UnicodeAttribute(null=True)
    source_ip = UnicodeAttribute(null=True)
    stale_shard = UnicodeAttribute()
    ttl = TTLAttribute(null=True)
    expires_at = NumberAttribute(null=True)

    by_tenant = ByTenantIndex()
    by_user = ByUserIndex()
    by_last_seen = ByLastSeenIndex()
    by_expiry = ByExpiryIndex()


@dataclass(frozen=True)
class ConnectionInfo:
    """What the rest of the code knows about a connection (times in epoch ms)."""

    connection_id: str
    tenant_id: str
    user_id: str
    transport: str
    address: str
    permissions: tuple[str, ...] = ()
    connected_at: int = 0
    last_seen: int = 0
    user_agent: str = ""
    source_ip: str | None = None
    #: When the connection's token expires (epoch ms); None: not recorded.
    expires_at: int | None = None

    @property
    def owner(self) -> str:
        """``"{tenant_id}#{user_id}"``, the ``by_user`` key."""
        return owner_of(self.tenant_id, self.user_id)


def _to_info(model: ConnectionModel) -> ConnectionInfo:
    return ConnectionInfo(
        connection_id=model.connection_id,
        tenant_id=model.tenant_id,
        user_id=model.user_id,
        transport=model.transport,
        address=model.address,
        permissions=tuple(str(p) for p in model.permissions or ()),
        connected_at=int(model.connected_at),
        last_seen=int(model.last_seen),
        user_agent=model.user_agent or "",
        source_ip=model.source_ip,
        expires_at=None if model.expires_at is None else int(model.expires_at),
    )


def _require_time(name: str, value: Any) -> int:
    return require_int(name, value, 0)


def _require_limit(limit: Any) -> int:
    return require_int("limit", limit, 1, MAX_PAGE)


def _connection_id(value: Any) -> str:
    return require_text("connection_id", value, MAX_CONNECTION_ID)


def _validate(info: ConnectionInfo) -> None:
    if not isinstance(info, ConnectionInfo):
        raise ValidationError("info must be a ConnectionInfo")
    _connection_id(info.connection_id)
    require_tenant(info.tenant_id)
    require_text("user_id", info.user_id, MAX_USER_ID)
    require_choice("transport", info.transport, TRANSPORTS)
    require_text("address", info.address, MAX_ADDRESS)
    require_strings("permissions", info.permissions)
    _require_time("connected_at", info.connected_at)
    _require_time("last_seen", info.last_seen)
    if not isinstance(info.user_agent, str):
        raise ValidationError("user_agent must be a string")
    if info.source_ip is not None:
        require_text("source_ip", info.source_ip, 64)
    if info.expires_at is not None:
        _require_time("expires_at", info.expires_at)


def _index_cursor(
    cursor: str | None, hash_name: str, hash_value: str, range_name: str
) -> dict[str, Any] | None:
    """Decode a list cursor and check that it belongs to this index and this hash key.

    A cursor that fails the checks is a ValidationError (raised before any network
    call), never a storage error.
    """
    key = decode_cursor(cursor)
    if key is None:
        return None
    expected = {"connection_id", hash_name, range_name}
    try:
        ok = (
            set(key) == expected
            and set(key["connection_id"]) == {"S"}
            and isinstance(key["connection_id"]["S"], str)
            and bool(key["connection_id"]["S"])
            and key[hash_name] == {"S": hash_value}
            and set(key[range_name]) == {"N"}
            and isinstance(key[range_name]["N"], str)
            and key[range_name]["N"].isdigit()
        )
    except (TypeError, AttributeError):
        ok = False
    if not ok:
        raise ValidationError("invalid cursor")
    return key


def _cursor_of(model: ConnectionModel, hash_name: str) -> str | None:
    return encode_cursor(
        {
            "connection_id": {"S": model.connection_id},
            hash_name: {"S": getattr(model, hash_name)},
            "connected_at": {"N": str(int(model.connected_at))},
        }
    )


def _item_of(info: ConnectionInfo, now: int) -> tuple[ConnectionInfo, ConnectionModel]:
    """What :meth:`ConnectionStore.save` stores for ``info`` (times defaulting to
    ``now``) and the item that stores it."""
    connected_at = info.connected_at or now
    last_seen = info.last_seen or max(now, connected_at)
    stored = replace(
        info,
        permissions=tuple(info.permissions),
        connected_at=connected_at,
        last_seen=last_seen,
        user_agent=info.user_agent[:MAX_USER_AGENT],
    )
    item = ConnectionModel(
        stored.connection_id,
        tenant_id=stored.tenant_id,
        user_id=stored.user_id,
        owner=stored.owner,
        transport=stored.transport,
        address=stored.address,
        permissions=list(stored.permissions),
        connected_at=connected_at,
        last_seen=last_seen,
        user_agent=stored.user_agent or None,
        source_ip=stored.source_ip,
        stale_shard=stale_shard_of(stored.connection_id),
        ttl=_ttl_at(last_seen),
        expires_at=stored.expires_at,
    )
    return stored, item


class ConnectionStore:
    """Typed operations on the connection registry.

    Stateless: use the module-level :data:`connection_store`. Every method validates its
    arguments before any network call (``ValidationError``) and turns unreachable or
    throttled storage into ``StorageUnavailable``.
    """

    # -- single items -----------------------------------------------------------------

    def save(self, info: ConnectionInfo) -> ConnectionInfo:
        """Store ``info`` (insert or replace) in one PutItem and return what was stored.

        ``connected_at`` and ``last_seen`` default to now when 0; ``user_agent`` is
        truncated to :data:`MAX_USER_AGENT` characters.
        """
        self.validate(info)
        stored, item = _item_of(info, now_ms())
        with storage_call("connection.save"):
            item.save()
        return stored

    def save_many(self, infos: Sequence[ConnectionInfo]) -> list[ConnectionInfo]:
        """Store several connections like :meth:`save` with PynamoDB's ``batch_write()``
        (BatchWriteItem, 25 items per call, the items DynamoDB left unprocessed sent
        again): one write per connection, a round trip per 25. Every item is validated
        before any network call. On ``StorageUnavailable`` some of the items may be
        stored and others not (remove them with :meth:`delete_many`)."""
        for info in infos:
            self.validate(info)
        now = now_ms()
        prepared = [_item_of(info, now) for info in infos]
        with storage_call("connection.save_many"), ConnectionModel.batch_write() as writer:
            for _, item in prepared:
                writer.save(item)
        return [stored for stored, _ in prepared]

    @staticmethod
    def validate(info: ConnectionInfo) -> None:
        """``ValidationError`` when ``info`` cannot be stored (no network call), so a
        caller gathering connections for :meth:`save_many` refuses a bad one alone."""
        _validate(info)

    def get(self, connection_id: str) -> ConnectionInfo:
        """The connection ``connection_id``; ``NotFound`` when it is not registered."""
        _connection_id(connection_id)
        try:
            with storage_call("connection.get"):
                item = ConnectionModel.get(connection_id)
        except DoesNotExist as exc:
            raise NotFound("connection not found") from exc
        return _to_info(item)

    def delete(self, connection_id: str, *, at: tuple[str, str] | None = None) -> bool:
        """Remove a connection in one call; True if it existed, False if it did not.

        Idempotent: deleting an unknown connection is not an error. With
        ``at=(transport, address)`` only a record of that transport at that address is
        removed (in the same conditional call; False otherwise), so an event of one
        transport cannot remove a socket held by another.
        """
        _connection_id(connection_id)
        condition = ConnectionModel.connection_id.exists()
        if at is not None:
            condition &= (ConnectionModel.transport == at[0]) & (ConnectionModel.address == at[1])
        try:
            with storage_call("connection.delete"):
                ConnectionModel(connection_id).delete(condition=condition)
        except ConditionFailed:
            return False
        return True

    def delete_many(self, connection_ids: Sequence[str]) -> int:
        """Remove connections unconditionally with BatchWriteItem (25 per call): the
        undo of a :meth:`save_many` that failed. Returns how many deletes were sent."""
        for connection_id in connection_ids:
            _connection_id(connection_id)
        with storage_call("connection.delete_many"):
            return delete_in_batches(
                ConnectionModel, (ConnectionModel(c) for c in connection_ids), batch_size=_BATCH
            )

    def touch(self, connection_id: str, at_ms: int | None = None) -> None:
        """Record activity: set ``last_seen`` (default now) and push the TTL back.

        One conditional UpdateItem: an unknown connection raises ``NotFound`` and no
        partial item is ever created.
        """
        _connection_id(connection_id)
        at = now_ms() if at_ms is None else _require_time("at_ms", at_ms)
        self._update_existing(
            connection_id,
            [ConnectionModel.last_seen.set(at), ConnectionModel.ttl.set(_ttl_at(at))],
            "connection.touch",
        )

    def set_token(
        self, connection_id: str, permissions: tuple[str, ...] | list[str], expires_at: int
    ) -> None:
        """Record a refreshed token (``auth.refresh``): its permissions and expiry, in one
        conditional UpdateItem; ``NotFound`` when the connection is not registered."""
        _connection_id(connection_id)
        _require_time("expires_at", expires_at)
        require_strings("permissions", permissions)
        self._update_existing(
            connection_id,
            [
                ConnectionModel.permissions.set(list(permissions)),  # type: ignore[arg-type]
                ConnectionModel.expires_at.set(expires_at),
            ],
            "connection.set_token",
        )

    @staticmethod
    def _update_existing(connection_id: str, actions: list[Any], operation: str) -> None:
        """One UpdateItem conditional on the item existing: NotFound otherwise, and no
        partial item is ever created."""
        try:
            with storage_call(operation):
                ConnectionModel(connection_id).update(
                    actions=actions, condition=ConnectionModel.connection_id.exists()
                )
        except ConditionFailed as exc:
            raise NotFound("connection not found") from exc

    # -- lists --------------------------------------------------------------------------

    def list_by_user(
        self, tenant_id: str, user_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[ConnectionInfo]:
        """One page of a user's connections, newest first.

        Pass the returned ``cursor`` back to get the next page; it is None on the last.
        """
        require_tenant(tenant_id)
        require_text("user_id", user_id, MAX_USER_ID)
        owner = owner_of(tenant_id, user_id)
        _require_limit(limit)
        start = _index_cursor(cursor, "owner", owner, "connected_at")
        return self._page(ConnectionModel.by_user, "owner", owner, limit, start, "list_by_user")

    def list_by_tenant(
        self, tenant_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[ConnectionInfo]:
        """One page of a tenant's connections, newest first (see :meth:`list_by_user`)."""
        require_tenant(tenant_id)
        _require_limit(limit)
        start = _index_cursor(cursor, "tenant_id", tenant_id, "connected_at")
        return self._page(
            ConnectionModel.by_tenant, "tenant_id", tenant_id, limit, start, "list_by_tenant"
        )

    @staticmethod
    def _page(
        index: GlobalSecondaryIndex[ConnectionModel],
        hash_name: str,
        hash_value: str,
        limit: int,
        start: dict[str, Any] | None,
        operation: str,
    ) -> Page[ConnectionInfo]:
        # Ask for one more than the page so that the last page has no cursor.
        with storage_call(f"connection.{operation}"):
            rows = list(
                index.query(
                    hash_value,
                    scan_index_forward=False,
                    limit=limit + 1,
                    page_size=limit + 1,
                    last_evaluated_key=start,
                )
            )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _cursor_of(rows[-1], hash_name) if more else None
        return Page(items=[_to_info(row) for row in rows], cursor=next_cursor)

    def iter_by_tenant(
        self, tenant_id: str, transports: Collection[str] | None = None
    ) -> Iterator[ConnectionInfo]:
        """Every connection of a tenant (of one of ``transports`` when given: filtered
        by storage, so the others never travel), newest first, page by page (fan-out).

        Arguments are checked at call time; storage is reached when iteration starts.
        """
        require_tenant(tenant_id)
        return self._iter(ConnectionModel.by_tenant, tenant_id, "iter_by_tenant", transports)

    def iter_by_user(
        self, tenant_id: str, user_id: str, transports: Collection[str] | None = None
    ) -> Iterator[ConnectionInfo]:
        """Every connection of a user (of one of ``transports`` when given), newest
        first, fetched page by page (fan-out)."""
        require_tenant(tenant_id)
        require_text("user_id", user_id, MAX_USER_ID)
        owner = owner_of(tenant_id, user_id)
        return self._iter(ConnectionModel.by_user, owner, "iter_by_user", transports)

    @staticmethod
    def _iter(
        index: GlobalSecondaryIndex[ConnectionModel],
        hash_value: str,
        operation: str,
        transports: Collection[str] | None = None,
    ) -> Iterator[ConnectionInfo]:
        only = None if transports is None else ConnectionModel.transport.is_in(*transports)
        with storage_call(f"connection.{operation}"):
            rows = index.query(
                hash_value, scan_index_forward=False, page_size=_ITER_PAGE, filter_condition=only
            )
            for row in rows:
                yield _to_info(row)

    def count_by_tenant(self, tenant_id: str) -> int:
        """How many connections a tenant has (an index query with Select=COUNT)."""
        require_tenant(tenant_id)
        with storage_call("connection.count_by_tenant"):
            return int(ConnectionModel.by_tenant.count(tenant_id))

    def count_by_user(self, tenant_id: str, user_id: str) -> int:
        """How many connections a user has (a ``by_user`` query with Select=COUNT)."""
        require_tenant(tenant_id)
        require_text("user_id", user_id, MAX_USER_ID)
        with storage_call("connection.count_by_user"):
            return int(ConnectionModel.by_user.count(owner_of(tenant_id, user_id)))

    def count_owners(self, tenant_id: str, max_rows: int) -> dict[str, int] | None:
        """Every user's connection count of a tenant, keyed by ``owner_of(tenant, user)``
        (users without connections are absent), read with one ``by_tenant`` query that
        projects only ``owner``; None when the tenant has more than ``max_rows``
        connections (the caller then counts the users it needs one by one)."""
        require_tenant(tenant_id)
        require_int("max_rows", max_rows, minimum=1)
        counts: dict[str, int] = {}
        rows = 0
        start: dict[str, Any] | None = None
        with storage_call("connection.count_owners"):
            # Raw rows, not models: only ``owner`` is read, and a model per row would
            # cost more than the query during a storm (connections/user_counts.py).
            table = ConnectionModel._get_connection()
            while True:
                page = table.query(
                    tenant_id,
                    index_name=ByTenantIndex.Meta.index_name,
                    attributes_to_get=["owner"],
                    exclusive_start_key=start,
                    limit=max_rows + 1 - rows,
                )
                for item in page.get("Items", ()):
                    owner = item["owner"]["S"]
                    counts[owner] = counts.get(owner, 0) + 1
                rows += int(page.get("Count", 0))
                if rows > max_rows:
                    return None
                start = page.get("LastEvaluatedKey")
                if not start:
                    return counts

    # -- cleanup ------------------------------------------------------------------------

    def iter_expired(self, before_ms: int | None = None) -> Iterator[tuple[str, str, str]]:
        """``(connection_id, transport, address)`` of every connection whose token expired
        before ``before_ms`` (default now): one key-condition query per shard of the
        sparse ``by_expiry`` index, never a scan."""
        cutoff = now_ms() if before_ms is None else _require_time("before_ms", before_ms)
        with storage_call("connection.iter_expired"):
            for shard in range(STALE_SHARDS):
                for row in ConnectionModel.by_expiry.query(
                    str(shard),
                    range_key_condition=ConnectionModel.expires_at < cutoff,
                    page_size=_ITER_PAGE,
                ):
                    yield row.connection_id, row.transport, row.address

    def delete_stale(
        self,
        older_than_ms: int,
        *,
        dry_run: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete connections not seen for more than ``older_than_ms`` milliseconds.

        ``older_than_ms`` is an age (for example ``10 * 60 * 1000``), not a timestamp:
        connections whose ``last_seen`` is before ``now - older_than_ms`` go. Each of the
        :data:`STALE_SHARDS` shards of ``by_last_seen`` is queried with a key condition
        (never a table scan) and the matches are removed with PynamoDB's
        ``batch_write()`` (BatchWriteItem, 25 at a time). Returns how many were deleted
        (with ``dry_run``, how many would be; nothing is deleted). ``on_progress``
        receives the running total after each batch (dry run: after each shard).

        A connection that becomes active between the query and its batch delete is
        removed anyway (batch deletes are unconditional); its socket's next write re-saves
        or closes it.
        """
        require_int("older_than_ms", older_than_ms, 1)
        if on_progress is not None and not callable(on_progress):
            raise ValidationError("on_progress must be callable")
        cutoff = now_ms() - older_than_ms
        condition = ConnectionModel.last_seen < cutoff
        with storage_call("connection.delete_stale"):
            if not dry_run:
                stale = itertools.chain.from_iterable(
                    ConnectionModel.by_last_seen.query(
                        str(shard), range_key_condition=condition, page_size=_ITER_PAGE
                    )
                    for shard in range(STALE_SHARDS)
                )
                return delete_in_batches(
                    ConnectionModel, stale, batch_size=_BATCH, on_batch=on_progress
                )
            total = 0
            for shard in range(STALE_SHARDS):
                total += ConnectionModel.by_last_seen.count(
                    str(shard), range_key_condition=condition
                )
                if on_progress is not None:
                    on_progress(total)
        return total


#: The store every caller uses.
connection_store = ConnectionStore()
