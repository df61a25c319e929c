"""Tokens over API Gateway (docs/protocol.md 1.1), against moto: the per-user cap, an
expired token noticed at the next frame, the sweep closing expired sockets, and
``auth.refresh`` recorded so a cold container rebuilds the refreshed session."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

import pytest
from asgiref.sync import sync_to_async
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

from connections.expiry import close_expired
from connections.models import Tenant
from connections.tenants import forget_tenant
from storage.connection import connection_store
from storage.errors import NotFound
from streaming.apigw import handle_websocket_event, sessions
from tests.connections.transports.test_apigw import posted_frames
from tests.streaming.test_apigw import connect_event, message_event
from tests.support.apigw import token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_sessions(settings):
    settings.STREAMER_JWT_LEEWAY_S = 0
    sessions._items.clear()
    yield
    sessions._items.clear()


def short_token(seconds: float = 1, **extra) -> str:
    return token(exp=int(time.time() + seconds), **extra)


def moto_connections() -> dict:
    return apigatewaymanagementapi_backends["123456789012"]["eu-west-1"].connections


async def test_per_user_cap_is_429_over_api_gateway(moto_dynamodb, apigw_tenant) -> None:
    await sync_to_async(Tenant.objects.filter(id="acme").update)(max_connections_per_user=2)
    forget_tenant()
    statuses = [
        (await handle_websocket_event(connect_event(token(), connection_id=f"C{i}")))["statusCode"]
        for i in range(3)
    ]
    assert statuses == [200, 200, 429]
    assert connection_store.count_by_user("acme", "u1") == 2


async def test_an_expired_token_is_noticed_at_the_next_frame(moto_dynamodb, apigw_tenant) -> None:
    assert (await handle_websocket_event(connect_event(short_token(1))))["statusCode"] == 200
    echo = json.dumps({"id": "e1", "action": "echo", "payload": {}})
    assert (await handle_websocket_event(message_event(echo)))["statusCode"] == 200
    assert [f["type"] for f in posted_frames("Cid1=")] == ["response"]
    record = connection_store.get("Cid1=")
    await asyncio.sleep(max(0.0, record.expires_at / 1000 - time.time()) + 0.2)
    sessions._items.clear()  # a cold container, rebuilding the session from the record
    result = await handle_websocket_event(message_event(echo))
    assert result["statusCode"] == 401
    with pytest.raises(NotFound):
        connection_store.get("Cid1=")
    assert quote("Cid1=", safe="") not in moto_connections(), "the socket was deleted"


async def test_the_sweep_closes_expired_sockets_only(moto_dynamodb, apigw_tenant) -> None:
    await handle_websocket_event(connect_event(short_token(1), connection_id="Old="))
    await handle_websocket_event(connect_event(token(user="u2"), connection_id="Fresh="))
    for cid in ("Old=", "Fresh="):
        await handle_websocket_event(message_event('{"type": "ping"}', cid))
    await asyncio.sleep(
        max(0.0, connection_store.get("Old=").expires_at / 1000 - time.time()) + 0.2
    )
    assert await close_expired() == 1
    with pytest.raises(NotFound):
        connection_store.get("Old=")
    assert connection_store.get("Fresh=").user_id == "u2"
    assert quote("Old=", safe="") not in moto_connections()
    assert quote("Fresh=", safe="") in moto_connections()
    assert await close_expired() == 0


@pytest.mark.parametrize(
    ("new", "code"),
    [
        (lambda: token(exp=int(time.time()) + 3600, permissions=["p"]), None),
        (lambda: token(user="u2", exp=int(time.time()) + 3600), "FORBIDDEN"),
        (lambda: token(exp=int(time.time()) - 60), "FORBIDDEN"),
    ],
    ids=["same-user", "other-user", "expired"],
)
async def test_refresh_over_api_gateway(moto_dynamodb, apigw_tenant, new, code) -> None:
    await handle_websocket_event(connect_event(short_token(600)))
    before = connection_store.get("Cid1=")
    fresh = new()
    body = json.dumps({"id": "r1", "action": "auth.refresh", "payload": {"token": fresh}})
    await handle_websocket_event(message_event(body))
    [frame] = posted_frames("Cid1=")
    after = connection_store.get("Cid1=")
    if code is None:
        assert frame["type"] == "response"
        assert after.expires_at == frame["data"]["expires_at"] > before.expires_at
        assert after.permissions == ("p",)
        sessions._items.clear()  # a cold container sees the refreshed token's rights
        assert await _session_permissions() == frozenset({"p"})
    else:
        assert frame["error"]["code"] == code
        assert after.expires_at == before.expires_at and after.permissions == ()


async def _session_permissions() -> frozenset[str]:
    from streaming.apigw import _session_for

    return (await _session_for(message_event("{}")["requestContext"])).identity.permissions


@pytest.mark.parametrize("failure", ["gone", "error"])
async def test_the_sweep_forgets_expired_sockets_even_when_closing_fails(
    moto_dynamodb, monkeypatch, failure
) -> None:
    import connections.expiry as expiry
    from connections.transports import ConnectionGone, TransportError
    from storage.base import now_ms
    from storage.connection import ConnectionInfo

    connection_store.save(
        ConnectionInfo("X=", "acme", "u1", "apigw", "https://x/@connections/X=", expires_at=1)
    )

    class Failing:
        async def close(self, address: str, code: int, reason: str = "") -> None:
            raise (ConnectionGone if failure == "gone" else TransportError)("nope")

    monkeypatch.setattr(expiry, "get_transport", lambda name: Failing())
    assert await close_expired() == 1
    with pytest.raises(NotFound):
        connection_store.get("X=")
    assert list(connection_store.iter_expired(now_ms())) == []


async def test_refresh_of_a_connection_whose_record_is_gone(moto_dynamodb, apigw_tenant) -> None:
    await handle_websocket_event(connect_event(token()))
    connection_store.delete("Cid1=")  # removed by a cleanup; the warm session remains
    fresh = token(exp=int(time.time()) + 3600)
    body = json.dumps({"id": "r1", "action": "auth.refresh", "payload": {"token": fresh}})
    await handle_websocket_event(message_event(body))
    [frame] = posted_frames("Cid1=")
    assert frame["error"]["code"] == "FORBIDDEN"
    assert frame["error"]["details"] == {"reason": "connection_gone"}
