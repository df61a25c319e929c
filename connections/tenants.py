"""Tenant lookups with a short in-process cache, so a connect costs no SQL round trip
in the common case (the cache lives for ``STREAMER_TENANT_CACHE_S`` seconds)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from connections.caches import expiring_cache
from connections.models import Tenant


@dataclass(frozen=True)
class TenantPolicy:
    """What the real-time path needs to know about a tenant."""

    tenant_id: str
    active: bool
    max_connections: int
    rate_limit_frames: int
    rate_limit_window_s: int
    max_connections_per_user: int = 20
    max_active_requests: int = 1000
    max_active_requests_per_user: int = 20
    max_running: int | None = None  # None: the worker's default share of its slots
    webhook_url: str = ""  # empty: no webhooks
    webhook_secret: str = ""


MAX_CACHED_TENANTS = 10_000
#: What :func:`cached_tenant_policy` returns for a tenant not in the cache.
MISSING: Any = object()
# Shared by every thread of the process (sync_to_async runs lookups in threads).
_cache = expiring_cache(MAX_CACHED_TENANTS, lambda: settings.STREAMER_TENANT_CACHE_S)
_lock = threading.Lock()


def cached_tenant_policy(tenant_id: str) -> TenantPolicy | None:
    """The cached answer of :func:`get_tenant_policy` (None: no such tenant), or
    ``MISSING`` when there is none: safe on the event loop, it never queries (a
    connect's tenant check then costs no thread hop)."""
    with _lock:
        return _cache.get(tenant_id, MISSING)  # type: ignore[no-any-return]


def get_tenant_policy(tenant_id: str) -> TenantPolicy | None:
    """The tenant's policy, or None when it does not exist (cached briefly, misses too)."""
    hit = cached_tenant_policy(tenant_id)
    if hit is not MISSING:
        return hit
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    policy = None
    if tenant is not None:
        policy = TenantPolicy(
            tenant_id=tenant.id,
            active=tenant.active,
            max_connections=tenant.max_connections,
            rate_limit_frames=tenant.rate_limit_frames or settings.STREAMER_RATE_LIMIT_FRAMES,
            rate_limit_window_s=tenant.rate_limit_window_s or settings.STREAMER_RATE_LIMIT_WINDOW_S,
            max_connections_per_user=tenant.max_connections_per_user
            or settings.STREAMER_MAX_CONNECTIONS_PER_USER,
            max_active_requests=tenant.max_active_requests
            or settings.STREAMER_MAX_ACTIVE_REQUESTS_PER_TENANT,
            max_active_requests_per_user=tenant.max_active_requests_per_user
            or settings.STREAMER_MAX_ACTIVE_REQUESTS_PER_USER,
            max_running=tenant.max_running,
            webhook_url=tenant.webhook_url,
            webhook_secret=tenant.webhook_secret,
        )
    with _lock:
        _cache[tenant_id] = policy
    return policy


def forget_tenant(tenant_id: str | None = None) -> None:
    """Drop one cached tenant (or all): called when a tenant is saved in the admin."""
    with _lock:
        if tenant_id is None:
            _cache.clear()
        else:
            _cache.pop(tenant_id, None)
