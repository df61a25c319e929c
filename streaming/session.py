"""A connected client, as the pipeline sees it, and how a session opens and closes.

Shared by the Channels consumer and the API Gateway entry points.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cachetools import FIFOCache, LRUCache
from channels.db import database_sync_to_async
from django.conf import settings

from connections.caches import deadline_cache
from connections.manager import Target
from connections.registrations import registrations
from connections.storage_pool import run_storage
from connections.tenants import MISSING, TenantPolicy, cached_tenant_policy, get_tenant_policy
from storage.connection import ConnectionInfo, connection_store
from storage.errors import StorageUnavailable
from storage.subscription import subscription_store
from streaming.auth import (
    FORBIDDEN_TENANT,
    STORAGE_DOWN,
    TOO_MANY_CONNECTIONS,
    AuthFailure,
    Identity,
)
from streaming.ratelimit import TokenBucket
from streaming.user_cap import check_room, confirm

log = logging.getLogger(__name__)

TERMINAL_TYPES = frozenset({"complete", "error"})


@dataclass
class OutputOrder:
    """Where one request's output stream stands on one connection."""

    last: int  # the last seq sent
    replaying: bool = False  # a replay from storage (request.status after_seq) is running
    held: dict[int, str] = field(default_factory=dict)  # live frames ahead of the replay
    terminal: str | None = None  # the terminal frame, held until the replay ends


class DeliveryGuard:
    """Per-connection enforcement of docs/protocol.md §6 for frames about requests:
    progress never goes down, ``output`` in seq order without gap or duplicate (live
    frames ahead of a replay wait for it), one terminal frame, nothing after it.

    Remembers the last few thousand finished and running requests (bounded memory).
    """

    __slots__ = ("_finished", "_outputs", "_progress")
    MAX_REMEMBERED = 2048
    MAX_HELD = 20_000  # live output frames held behind a replay that never ends

    def __init__(self) -> None:
        # Running requests, the least recently updated forgotten first (those whose
        # terminal frame never came here); finished ones, the oldest forgotten first.
        # cachetools costs ~1.3 µs more per progress frame than an OrderedDict here.
        self._progress: LRUCache[str, float] = LRUCache(self.MAX_REMEMBERED)
        self._finished: FIFOCache[str, None] = FIFOCache(self.MAX_REMEMBERED)
        self._outputs: LRUCache[str, OutputOrder] = LRUCache(self.MAX_REMEMBERED)

    def admit(self, message: dict[str, Any]) -> list[str]:
        """The texts to send now for one frame message of the transport (none, this
        frame's, or frames held behind a replay that this one completes)."""
        kind, request_id = message.get("frame_type"), message.get("request_id")
        text: str = message["text"]
        if kind == "output" and request_id is not None:
            return self._admit_output(request_id, int(message["seq"]), text, message.get("replay"))
        order = self._outputs.get(request_id) if request_id is not None else None
        if order is not None and order.replaying and kind in TERMINAL_TYPES:
            if request_id not in self._finished and order.terminal is None:
                order.terminal = text  # goes out after the stored output
            return []
        return [text] if self.allow(kind, request_id, message.get("percentage")) else []

    def expect_output(self, request_id: str, after_seq: int) -> None:
        """A replay of the output after ``after_seq`` starts: live frames past it wait."""
        order = self._order(request_id, after_seq)
        order.last = max(order.last, after_seq)
        order.replaying = True

    def end_replay(self, request_id: str) -> list[str]:
        """The replay is over (nothing, or nothing more, to replay): what waited goes."""
        order = self._outputs.get(request_id)
        if order is None or not order.replaying:
            return []
        order.replaying = False
        waiting = sorted(seq for seq in order.held if seq > order.last)
        out = [order.held[seq] for seq in waiting]
        if waiting:
            order.last = waiting[-1]
        order.held.clear()
        if order.terminal is not None:
            out.append(order.terminal)
            order.terminal = None
            self.mark_final(request_id)
        return out

    def _admit_output(self, request_id: str, seq: int, text: str, replay: Any) -> list[str]:
        if replay is None and request_id in self._finished:
            return []
        order = self._order(request_id, seq - 1)
        out: list[str] = []
        if seq <= order.last:
            pass  # already sent (a replay and the live stream overlap)
        elif seq == order.last + 1 or not order.replaying:
            out.append(text)
            order.last = seq
        elif len(order.held) < self.MAX_HELD:
            order.held[seq] = text
        while order.last + 1 in order.held:
            order.last += 1
            out.append(order.held.pop(order.last))
        if replay == "last":
            out.extend(self.end_replay(request_id))
        return out

    def _order(self, request_id: str, last: int) -> OutputOrder:
        order = self._outputs.get(request_id)  # a read counts as use: LRU order
        if order is None:
            order = self._outputs[request_id] = OutputOrder(last=last)
        return order

    def allow(
        self, frame_type: str | None, request_id: str | None, percentage: float | None
    ) -> bool:
        """Whether a frame about ``request_id`` may go out now (and record it)."""
        if request_id is None:
            return True
        if request_id in self._finished:
            return False
        if frame_type == "acknowledgment":
            # A watching connection can be told about one request twice (request.watch
            # lists the live ones while a new one is announced): the first one counts.
            if request_id in self._progress:
                return False
            self._remember_progress(request_id, -1.0)
        elif frame_type == "progress":
            last = self._progress.get(request_id, -1.0)
            pct = float(percentage or 0.0)
            if pct < last:
                return False
            self._remember_progress(request_id, pct)
        elif frame_type in TERMINAL_TYPES:
            self.mark_final(request_id)
        return True

    def _remember_progress(self, request_id: str, pct: float) -> None:
        # the LRU cache forgets the stalest (requests whose terminal frame never came here)
        self._progress[request_id] = pct

    def mark_final(self, request_id: str) -> None:
        """No more frames about this request on this connection."""
        self._progress.pop(request_id, None)
        self._outputs.pop(request_id, None)
        self._finished[request_id] = None


class TenantCounts:
    """Live-connection counts per tenant, cached for ``ttl_s`` and adjusted by this
    process's own connects and disconnects meanwhile.

    The index count costs one query whose price grows with the tenant's connections;
    caching it makes the limit soft: other processes' connects within ``ttl_s`` are
    seen late, so a tenant may briefly exceed its limit by what they accepted.
    """

    def __init__(self, ttl_s: float = 2.0, max_tenants: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_tenants = max_tenants
        # (expires at, count): a bump keeps the deadline of the count it adjusts.
        self._counts = deadline_cache(max_tenants)
        self._lock = threading.Lock()

    def get(self, tenant_id: str) -> int | None:
        """The cached count, or None when there is none or it is stale."""
        with self._lock:
            hit = self._counts.get(tenant_id)
        return None if hit is None else int(hit[1])

    def put(self, tenant_id: str, count: int) -> None:
        """Cache a count just read from storage, for ``ttl_s``."""
        with self._lock:
            self._counts[tenant_id] = (time.monotonic() + self.ttl_s, count)

    def bump(self, tenant_id: str, delta: int) -> None:
        """Adjust a fresh cached count by this process's own (dis)connect."""
        with self._lock:
            hit = self._counts.get(tenant_id)
            if hit is not None:
                self._counts[tenant_id] = (hit[0], max(0, hit[1] + delta))


tenant_counts = TenantCounts()


def inbound_bucket() -> TokenBucket:
    """The inbound-bytes budget of one connection (docs/protocol.md §5: 4 MiB per 10 s):
    the frame bucket alone lets 100 frames of 128 KiB each through per window."""
    return TokenBucket(settings.STREAMER_MAX_INBOUND_BYTES, settings.STREAMER_RATE_LIMIT_WINDOW_S)


@dataclass
class Session:
    """One authenticated connection."""

    identity: Identity
    connection_id: str
    transport: str
    address: str
    limiter: TokenBucket
    policy: TenantPolicy
    inbound: TokenBucket = field(default_factory=inbound_bucket)
    subscriptions: set[str] = field(default_factory=set)
    guard: DeliveryGuard = field(default_factory=DeliveryGuard)
    # Turned on by request.watch: other processes may have subscribed this connection.
    watched: bool = False
    last_touch: float = field(default_factory=time.monotonic)  # last ``last_seen`` write
    # Opened by this process (counted in its metrics), not rebuilt from the stored record.
    opened_here: bool = False

    @classmethod
    def start(
        cls,
        identity: Identity,
        connection_id: str,
        transport: str,
        address: str,
        policy: TenantPolicy,
    ) -> Session:
        """A session with a fresh rate limiter from the tenant's policy."""
        return cls(
            identity=identity,
            connection_id=connection_id,
            transport=transport,
            address=address,
            limiter=TokenBucket(policy.rate_limit_frames, policy.rate_limit_window_s),
            policy=policy,
        )

    def refresh(self, identity: Identity, policy: TenantPolicy) -> None:
        """Take a re-read identity and tenant policy (API Gateway re-checks them now and
        then) and keep the rest of the session's state; the rate limiter restarts only
        when the tenant's limits changed."""
        limits = (policy.rate_limit_frames, policy.rate_limit_window_s)
        if limits != (self.policy.rate_limit_frames, self.policy.rate_limit_window_s):
            self.limiter = TokenBucket(*limits)
        self.identity = identity
        self.policy = policy

    @property
    def target(self) -> Target:
        """Where this session's socket is."""
        return Target(self.connection_id, self.transport, self.address)


async def open_session(
    identity: Identity,
    *,
    connection_id: str,
    transport: str,
    address: str,
    user_agent: str = "",
    source_ip: str | None = None,
) -> Session:
    """Check the tenant, its connection limit and the user's own limit, then register
    the connection with one DynamoDB write (gathered with concurrent connects' into one
    BatchWriteItem: :mod:`connections.registrations`). Raises AuthFailure with the close
    code to use."""
    policy = await active_policy(identity.tenant_id)
    info = ConnectionInfo(
        connection_id=connection_id,
        tenant_id=identity.tenant_id,
        user_id=identity.user_id,
        transport=transport,
        address=address,
        permissions=tuple(sorted(identity.permissions)),
        user_agent=user_agent[:512],
        source_ip=source_ip,
        expires_at=identity.expires_at,
    )
    tenant = identity.tenant_id
    reserved = False
    try:
        if policy.max_connections:
            count = tenant_counts.get(tenant)
            if count is None:
                fresh = await run_storage(connection_store.count_by_tenant, tenant)
                # A concurrent connect may have refreshed it meanwhile, with its own
                # reservation counted: keep that one.
                count = tenant_counts.get(tenant)
                if count is None:
                    tenant_counts.put(tenant, fresh)
                    count = fresh
            if count >= policy.max_connections:
                raise AuthFailure(TOO_MANY_CONNECTIONS, "Too many connections")
            # Reserve the slot before the write (no await in between): a burst of
            # simultaneous connects must not all see the same count.
            tenant_counts.bump(tenant, 1)
            reserved = True
        await check_room(identity, policy.max_connections_per_user)
        await registrations.register(info)
        await confirm(identity, connection_id, policy.max_connections_per_user)
        if not reserved:
            tenant_counts.bump(tenant, 1)
    except StorageUnavailable as exc:
        if reserved:
            tenant_counts.bump(tenant, -1)
        raise AuthFailure(STORAGE_DOWN, "Service unavailable, try again later") from exc
    except AuthFailure:
        if reserved:
            tenant_counts.bump(tenant, -1)
        raise
    return Session.start(identity, connection_id, transport, address, policy)


async def active_policy(tenant_id: str) -> TenantPolicy:
    """The tenant's (cached) policy; AuthFailure(4403) when it is unknown or disabled."""
    policy = cached_tenant_policy(tenant_id)
    if policy is MISSING:  # not cached: the lookup runs a query, off the event loop
        policy = await database_sync_to_async(get_tenant_policy)(tenant_id)
    if policy is None or not policy.active:
        raise AuthFailure(FORBIDDEN_TENANT, "Tenant unavailable")
    return policy


async def close_session(session: Session) -> None:
    """Forget the connection: one delete, plus one batch delete of its subscriptions
    when it made any (all of them, found by a query, when it watched: request.watch; the
    tenant's count is given back by ``streaming.edge``)."""

    def _close() -> None:
        connection_store.delete(session.connection_id)
        if session.watched:
            subscription_store.delete_by_connection(session.connection_id)
        elif session.subscriptions:
            subscription_store.delete_many(session.connection_id, session.subscriptions)

    try:
        await run_storage(_close)
    except StorageUnavailable:
        log.warning(
            "could not delete connection %s; cleanup_connections will", session.connection_id
        )
