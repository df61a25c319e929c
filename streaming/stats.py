"""What the admin dashboard and ``manage.py streamer_stats`` show: tenants and their live
connections, active requests per status, the oldest waiting request, and workers.

Every figure comes from an index, never a table scan on a hot table:

* connections per tenant: ``count_by_tenant`` (one ``by_tenant`` index query each) for
  at most :data:`~connections.admin_support.MAX_COUNTED_TENANTS` tenants, cached 10 s;
* active requests: the sparse ``due`` index holds exactly the PENDING, RETRYING and
  PROCESSING requests; up to :data:`MAX_ACTIVE` of them are read (beyond that the counts
  are shown as a lower bound);
* oldest waiting request: among those, the PENDING/RETRYING one that has been due the
  longest (its age is how long it has waited for a worker);
* workers: the heartbeat table (a scan of a tiny table, see
  ``storage/heartbeat.py``).

A part that fails (storage down) is reported in ``errors``; the other parts still show.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache

from connections.admin_support import MAX_COUNTED_TENANTS, connection_counts
from connections.models import Tenant
from storage import heartbeat
from storage.base import now_ms
from storage.errors import StoreError
from storage.heartbeat import Heartbeat
from storage.requests.model import RequestStatus
from storage.requests.store import request_store

log = logging.getLogger(__name__)

#: Statuses of requests that have not ended (the ones in the ``due`` index).
ACTIVE_STATUSES = (RequestStatus.PENDING, RequestStatus.RETRYING, RequestStatus.PROCESSING)
#: At most this many active requests are read for the counts.
MAX_ACTIVE = 1000
#: The dashboard's figures are cached this long (seconds).
STATS_CACHE_S = 10
_CACHE_KEY = "streamer:admin:stats"
_FAR_FUTURE_MS = 10 * 365 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TenantLoad:
    """One tenant and its live connections (None: not counted, or the count failed)."""

    tenant_id: str
    name: str
    active: bool
    max_connections: int
    connections: int | None

    @property
    def usage(self) -> float | None:
        """Share of the connection limit in use, 0..1+ (None: unlimited or unknown)."""
        if self.connections is None or not self.max_connections:
            return None
        return self.connections / self.max_connections


@dataclass(frozen=True)
class WaitingRequest:
    """The request that has waited longest for a worker."""

    key: str
    tenant_id: str
    user_id: str
    request_id: str
    status: str
    created_at: int
    waiting_ms: int


@dataclass
class Stats:
    """A snapshot of the system (times in epoch ms)."""

    generated_at: int
    tenants_total: int = 0
    tenants_active: int = 0
    tenants: list[TenantLoad] = field(default_factory=list)
    tenants_all_counted: bool = True
    requests_by_status: dict[str, int] = field(default_factory=dict)  # {}: unavailable
    requests_capped: bool = False
    oldest_waiting: WaitingRequest | None = None
    workers: list[Heartbeat] = field(default_factory=list)
    workers_available: bool = True
    errors: list[str] = field(default_factory=list)

    @property
    def connections_total(self) -> int:
        """Live connections of the counted tenants."""
        return sum(t.connections or 0 for t in self.tenants)

    @property
    def requests_active(self) -> int:
        """Active requests counted (a lower bound when ``requests_capped``)."""
        return sum(self.requests_by_status.values())

    def workers_alive(self) -> list[Heartbeat]:
        """Workers whose last beat is recent."""
        return [w for w in self.workers if w.is_alive(self.generated_at)]

    def workers_stale(self) -> list[Heartbeat]:
        """Workers that stopped beating (died, or cannot reach storage)."""
        return [w for w in self.workers if not w.is_alive(self.generated_at)]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (``streamer_stats --json``)."""
        return {
            "generated_at": self.generated_at,
            "tenants": {
                "total": self.tenants_total,
                "active": self.tenants_active,
                "all_counted": self.tenants_all_counted,
                "connections": {t.tenant_id: t.connections for t in self.tenants},
                "details": [asdict(t) for t in self.tenants],
            },
            "connections_total": self.connections_total,
            "requests": {
                "by_status": dict(self.requests_by_status),
                "active": self.requests_active,
                "capped": self.requests_capped,
                "oldest_waiting": asdict(self.oldest_waiting) if self.oldest_waiting else None,
            },
            "workers": {
                "available": self.workers_available,
                "alive": len(self.workers_alive()),
                "stale": len(self.workers_stale()),
                "list": [w.as_dict(self.generated_at) for w in self.workers],
            },
            "errors": list(self.errors),
        }


def collect_stats(*, use_cache: bool = True, now: int | None = None) -> Stats:
    """The current figures; cached for :data:`STATS_CACHE_S` s unless ``use_cache`` is
    False (``streamer_stats`` always reads fresh)."""
    if use_cache:
        cached = cache.get(_CACHE_KEY)
        if isinstance(cached, Stats):
            return cached
    at = now_ms() if now is None else now
    stats = Stats(generated_at=at)
    _tenants(stats, use_cache)
    _requests(stats, at)
    _workers(stats, at)
    if use_cache:
        cache.set(_CACHE_KEY, stats, timeout=STATS_CACHE_S)
    return stats


def _tenants(stats: Stats, use_cache: bool) -> None:
    stats.tenants_total = Tenant.objects.count()
    stats.tenants_active = Tenant.objects.filter(active=True).count()
    rows = list(Tenant.objects.order_by("id")[:MAX_COUNTED_TENANTS])
    stats.tenants_all_counted = stats.tenants_total <= len(rows)
    counts = connection_counts([t.id for t in rows], use_cache=use_cache)
    stats.tenants = [
        TenantLoad(t.id, t.name, t.active, t.max_connections, counts.get(t.id)) for t in rows
    ]
    if any(load.connections is None for load in stats.tenants):
        stats.errors.append("some connection counts are unavailable (storage)")


def _requests(stats: Stats, at: int) -> None:
    try:
        active = request_store.list_due(
            now=at + _FAR_FUTURE_MS, limit=MAX_ACTIVE, shards=settings.STREAMER_QUEUE_SHARDS
        )
    except StoreError:
        log.warning("could not read the active requests", exc_info=True)
        stats.errors.append("active requests unavailable (storage)")
        return
    stats.requests_by_status = {status.value: 0 for status in ACTIVE_STATUSES}
    stats.requests_capped = len(active) >= MAX_ACTIVE
    for record in active:
        stats.requests_by_status[record.status.value] = (
            stats.requests_by_status.get(record.status.value, 0) + 1
        )
    # list_due is sorted by due_at: the first waiting one that is due waited longest.
    for record in active:
        if record.status in (RequestStatus.PENDING, RequestStatus.RETRYING) and (
            record.due_at is not None and record.due_at <= at
        ):
            stats.oldest_waiting = WaitingRequest(
                key=record.key.as_string(),
                tenant_id=record.tenant_id,
                user_id=record.user_id,
                request_id=record.request_id,
                status=record.status.value,
                created_at=record.created_at,
                waiting_ms=at - record.due_at,
            )
            break


def _workers(stats: Stats, at: int) -> None:
    try:
        stats.workers = heartbeat.list_heartbeats(now=at)
    except StoreError:
        log.warning("could not read the worker heartbeats", exc_info=True)
        stats.workers_available = False
        stats.errors.append("worker heartbeats unavailable (storage)")
