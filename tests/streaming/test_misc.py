"""Smaller pieces: the action registry, the tenant cache, origin configuration,
session counting, routing options."""

from __future__ import annotations

import importlib

import pytest
from pydantic import BaseModel

import streaming.asgi
from connections import tenants
from connections.manager import Target
from protocol.errors import ProtocolError
from streaming import origin as origin_module
from streaming.actions.registry import ActionRegistry, ActionSpec, RetryableError, action
from streaming.session import TenantCounts

pytestmark = pytest.mark.usefixtures("asgi_settings")

# --- registry ---------------------------------------------------------------------------


class Sized(BaseModel):
    width: int
    height: int = 1


def test_register_and_lookup() -> None:
    local = ActionRegistry()

    @action("img.resize", mode="async", schema=Sized, retry_on=(ConnectionError,), registry=local)
    def resize(job, payload):
        return payload.width

    spec = local.get("img.resize")
    assert spec.handler is resize and spec.mode == "async" and not spec.is_coroutine
    assert local.names() == ["img.resize"]
    assert spec.validate({"width": 3}).width == 3
    assert spec.is_retryable(ConnectionError()) and spec.is_retryable(RetryableError())
    assert not spec.is_retryable(ValueError())
    local.unregister("img.resize")
    local.unregister("img.resize")  # idempotent
    with pytest.raises(ProtocolError) as info:
        local.get("img.resize")
    assert info.value.code.value == "INVALID_ACTION"


def test_validation_lists_every_field() -> None:
    spec = ActionSpec("x", lambda ctx, p: p, schema=Sized)
    with pytest.raises(ProtocolError) as info:
        spec.validate({"width": "wide", "height": "tall"})
    fields = [e["field"] for e in info.value.details["errors"]]
    assert fields == ["payload.width", "payload.height"]
    assert ActionSpec("y", lambda ctx, p: p).validate({"any": 1}) == {"any": 1}


@pytest.mark.parametrize(
    "spec",
    [
        ActionSpec("dup", lambda: None),
        ActionSpec("z", lambda: None, max_attempts=0),
        ActionSpec("z", lambda: None, timeout_s=0),
    ],
)
def test_register_rejects(spec) -> None:
    local = ActionRegistry()
    local.register(ActionSpec("dup", lambda: None))
    with pytest.raises(ValueError):
        local.register(spec)


# --- tenant cache -----------------------------------------------------------------------


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
def test_tenant_cache_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(tenants, "_cache", {f"t{i}": (1e18, None) for i in range(10_001)})
    tenants.get_tenant_policy("acme")
    assert list(tenants._cache) == ["acme"]


# --- connection counts ------------------------------------------------------------------


def test_tenant_counts(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr("streaming.session.time.monotonic", lambda: now[0])
    counts = TenantCounts(ttl_s=2.0, max_tenants=2)
    assert counts.get("a") is None
    counts.bump("a", 1)  # nothing cached: nothing to adjust
    assert counts.get("a") is None
    counts.put("a", 5)
    counts.bump("a", 1)
    assert counts.get("a") == 6
    counts.bump("a", -10)
    assert counts.get("a") == 0, "never negative"
    now[0] += 2.5
    assert counts.get("a") is None, "stale after ttl"
    counts.put("b", 1)
    counts.put("c", 1)  # over max_tenants: the cache starts over
    assert counts.get("a") is None and counts.get("c") == 1


# --- origin and routing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("debug", "hosts", "expected"),
    [
        (True, [], ["localhost", "127.0.0.1", "[::1]"]),
        (False, [], []),
        (True, ["example.com"], ["example.com"]),
    ],
)
def test_origin_validator_hosts(settings, debug, hosts, expected) -> None:
    settings.DEBUG = debug
    settings.ALLOWED_HOSTS = hosts
    validator = origin_module.browser_origin_validator(object())
    assert validator.allowed_origins == expected


def test_routing_options(settings) -> None:
    settings.DEBUG = True
    settings.STREAMER_BENCH_ENDPOINTS = True
    try:
        module = importlib.reload(streaming.asgi)
        patterns = [p.pattern.regex.pattern for p in module.websocket_urlpatterns]
        assert any("ws" in p for p in patterns) and any("bench" in p for p in patterns)
        assert type(module.http_app).__name__ == "ASGIStaticFilesHandler"
    finally:
        settings.DEBUG = False
        settings.STREAMER_BENCH_ENDPOINTS = False
        module = importlib.reload(streaming.asgi)
    assert [p.pattern.regex.pattern for p in module.websocket_urlpatterns] == ["^ws/?$"]


# --- session and tenant models --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_open_session_target(live) -> None:
    from streaming.auth import Identity
    from streaming.session import close_session, open_session

    identity = Identity("acme", "alice", frozenset())
    session = await open_session(identity, connection_id="c1", transport="channels", address="a")
    assert session.target == Target("c1", "channels", "a")
    assert session.limiter.capacity == 100
    await close_session(session)


@pytest.mark.django_db
def test_tenant_str() -> None:
    from connections.models import Tenant

    assert str(Tenant(id="acme", name="Acme Inc")) == "Acme Inc"
    assert str(Tenant(id="acme")) == "acme"


@pytest.mark.django_db
def test_api_keys() -> None:
    from django.utils import timezone

    from connections.models import ApiKey, Tenant

    tenant = Tenant.objects.create(id="acme")
    row, secret = ApiKey.issue(tenant, "ci")
    assert secret.startswith(ApiKey.PREFIX) and row.key_hash not in secret
    assert row.active and "acme" in str(row) and secret not in str(row)
    assert ApiKey.authenticate(secret) == row
    for wrong in ("", "sk_short", "pk_" + secret[3:], secret[:-1] + "x", secret + "x"):
        assert ApiKey.authenticate(wrong) is None
    row.revoked_at = timezone.now()
    row.save()
    assert not row.active
    assert ApiKey.authenticate(secret) is None
