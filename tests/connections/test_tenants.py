"""The per-process cache of tenant policies (connections/tenants.py)."""

from __future__ import annotations

import pytest

from connections import tenants

pytestmark = pytest.mark.usefixtures("asgi_settings")


@pytest.mark.django_db
def test_tenant_policy_cached_and_forgotten(settings) -> None:
    from connections.models import Tenant

    settings.STREAMER_RATE_LIMIT_FRAMES = 42
    settings.STREAMER_RATE_LIMIT_WINDOW_S = 7
    assert tenants.get_tenant_policy("acme") is None  # misses are cached too
    Tenant.objects.create(id="acme", rate_limit_window_s=3)  # the signal forgets it
    policy = tenants.get_tenant_policy("acme")
    assert (policy.active, policy.max_connections) == (True, 1000)
    assert (policy.rate_limit_frames, policy.rate_limit_window_s) == (42, 3)
    Tenant.objects.filter(pk="acme").update(active=False)  # no signal: still cached
    assert tenants.get_tenant_policy("acme").active is True
    tenants.forget_tenant("acme")
    assert tenants.get_tenant_policy("acme").active is False


@pytest.mark.django_db
def test_tenant_cache_is_bounded() -> None:
    tenants.forget_tenant()
    limit = tenants.MAX_CACHED_TENANTS
    for i in range(limit):
        tenants._cache[f"t{i}"] = None
    tenants.get_tenant_policy("acme")
    assert len(tenants._cache) == limit
    assert "acme" in tenants._cache and "t0" not in tenants._cache, "least recent evicted"
    tenants.forget_tenant()
