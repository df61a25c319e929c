"""The edge API Gateway shares with the Channels consumer (streaming/edge.py): rate
limiter and delivery guard that survive the session re-check, metrics, last_seen and
the tenant's connection count."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

import streaming.apigw
from storage.connection import connection_store
from streaming.apigw import handle_websocket_event, sessions
from streaming.session import tenant_counts
from tests.connections.transports.test_apigw import posted_frames
from tests.streaming.test_apigw import connect_event, disconnect_event, message_event
from tests.support.apigw import token

PING = json.dumps({"type": "ping"})

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_sessions():
    sessions._items.clear()
    tenant_counts._counts.clear()
    yield
    sessions._items.clear()
    tenant_counts._counts.clear()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def tenant(apigw_tenant: Any) -> Any:
    """The API Gateway tier's tenant (JWT and shared-secret settings applied)."""
    return apigw_tenant


@pytest.mark.parametrize("recheck_after_s", [0.0, 60.0])
async def test_the_rate_limiter_survives_the_session_recheck(
    moto_dynamodb, tenant, monkeypatch: pytest.MonkeyPatch, recheck_after_s: float
) -> None:
    """With a re-check before every frame (0 s) the limiter still counts: before the
    shared edge, each re-check started a fresh limiter and nothing was ever limited."""
    tenant.rate_limit_frames, tenant.rate_limit_window_s = 3, 600
    await tenant.asave()
    monkeypatch.setattr(streaming.apigw, "_CACHE_S", recheck_after_s)
    assert (await handle_websocket_event(connect_event(token())))["statusCode"] == 200
    for _ in range(5):
        assert (await handle_websocket_event(message_event(PING)))["statusCode"] == 200
    kinds = [f["type"] for f in posted_frames("Cid1=")]
    assert kinds == ["pong", "pong", "pong", "error", "error"]
    assert posted_frames("Cid1=")[-1]["error"]["code"] == "RATE_LIMITED"


async def test_a_recheck_takes_new_tenant_limits(
    moto_dynamodb, tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant.rate_limit_frames, tenant.rate_limit_window_s = 1, 600
    await tenant.asave()
    monkeypatch.setattr(streaming.apigw, "_CACHE_S", 0.0)
    await handle_websocket_event(connect_event(token()))
    await handle_websocket_event(message_event(PING))
    await handle_websocket_event(message_event(PING))  # limited
    tenant.rate_limit_frames = 100
    await tenant.asave()  # the admin's save forgets the cached policy
    await handle_websocket_event(message_event(PING))
    kinds = [f["type"] for f in posted_frames("Cid1=")]
    assert kinds == ["pong", "error", "pong"]


async def test_connects_frames_out_and_the_tenant_count_are_kept_as_for_channels(
    moto_dynamodb, tenant
) -> None:
    tenant.max_connections = 10
    await tenant.asave()
    accepted = _sample("streamer_connects_total", outcome="accepted")
    refused = _sample("streamer_connects_total", outcome="4401")
    pongs = _sample("streamer_frames_out_total", type="pong")
    open_before = _sample("streamer_connections")

    assert (await handle_websocket_event(connect_event("not-a-jwt")))["statusCode"] == 401
    assert (await handle_websocket_event(connect_event(token())))["statusCode"] == 200
    assert tenant_counts.get("acme") == 1
    await handle_websocket_event(message_event(PING))
    assert _sample("streamer_connections") == open_before + 1
    assert (await handle_websocket_event(disconnect_event()))["statusCode"] == 200

    assert _sample("streamer_connects_total", outcome="accepted") == accepted + 1
    assert _sample("streamer_connects_total", outcome="4401") == refused + 1
    assert _sample("streamer_frames_out_total", type="pong") == pongs + 1
    assert _sample("streamer_connections") == open_before
    assert tenant_counts.get("acme") == 0


async def test_frames_record_last_seen_at_most_every_touch_interval(
    moto_dynamodb, tenant, settings
) -> None:
    await handle_websocket_event(connect_event(token()))
    connection_store.touch("Cid1=", at_ms=1_000)
    settings.STREAMER_TOUCH_INTERVAL_S = 3600
    await handle_websocket_event(message_event(PING))
    assert connection_store.get("Cid1=").last_seen == 1_000  # not due yet
    settings.STREAMER_TOUCH_INTERVAL_S = 0
    await handle_websocket_event(message_event(PING))
    assert connection_store.get("Cid1=").last_seen > 1_000
