"""HTTP endpoints through the ASGI application: /healthz, /metrics, /."""

from __future__ import annotations

import json

import pytest
from channels.layers import channel_layers
from channels.testing import HttpCommunicator

from streaming import views
from streaming.asgi import application
from streaming.auth import Identity, verify_token
from tests.support.sockets import connected

pytestmark = pytest.mark.usefixtures("asgi_settings")

HOST = [(b"host", b"localhost")]


async def get(path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    response = await HttpCommunicator(application, "GET", path, headers=HOST).get_response(10)
    return response["status"], dict(response["headers"]), response["body"]


async def test_healthz_ok(ddb) -> None:
    status, headers, body = await get("/healthz")
    assert status == 200
    assert headers[b"Content-Type"].startswith(b"application/json")
    assert json.loads(body) == {
        "status": "ok",
        "checks": {"storage": "ok", "channel_layer": "ok"},
    }


async def test_healthz_storage_unreachable(ddb, unreachable_storage) -> None:
    unreachable_storage()
    status, _, body = await get("/healthz")
    assert status == 503
    data = json.loads(body)
    assert data["status"] == "unavailable"
    assert data["checks"] == {"storage": "fail", "channel_layer": "ok"}
    assert b"127.0.0.1" not in body and b"rror" not in body


async def test_healthz_storage_ok_when_item_exists(ddb) -> None:
    from storage.connection import ConnectionInfo, connection_store

    connection_store.save(ConnectionInfo("healthz-probe", "acme", "u", "channels", "addr"))
    status, _, _ = await get("/healthz")
    assert status == 200


class BrokenLayer:
    async def send(self, channel, message):
        raise ConnectionError("redis://10.0.0.3:6379 refused")

    async def receive(self, channel):  # pragma: no cover - never reached
        return {}


@pytest.mark.parametrize("layer", [BrokenLayer(), None])
async def test_healthz_channel_layer_down(ddb, monkeypatch, layer) -> None:
    monkeypatch.setattr(views, "get_channel_layer", lambda: layer)
    status, _, body = await get("/healthz")
    assert status == 503
    assert json.loads(body)["checks"] == {"storage": "ok", "channel_layer": "fail"}
    assert b"redis" not in body


@pytest.mark.django_db(transaction=True)
async def test_metrics_prometheus_text(live) -> None:
    async with connected() as client:
        await client.request("echo", {})
        await client.ask("not json")
    status, headers, body = await get("/metrics")
    assert status == 200
    assert headers[b"Content-Type"].startswith(b"text/plain")
    text = body.decode()
    for name in (
        "streamer_connections",
        "streamer_connects_total",
        "streamer_frames_in_total",
        "streamer_frames_out_total",
        "streamer_errors_total",
        "streamer_request_seconds",
    ):
        assert f"# TYPE {name}" in text
    assert 'streamer_connects_total{outcome="accepted"}' in text
    assert 'streamer_errors_total{code="INVALID_MESSAGE"}' in text
    assert 'streamer_frames_out_total{type="response"}' in text
    assert "# HELP streamer_" in text


async def test_index_page() -> None:
    status, headers, body = await get("/")
    assert status == 200
    assert headers[b"Content-Type"].startswith(b"text/html")
    assert b"<html" in body.lower()


async def test_unknown_path_is_404() -> None:
    status, _, _ = await get("/nope")
    assert status == 404


def test_layers_reset_between_tests() -> None:
    assert channel_layers.backends == {}


# --- the development token endpoint ---------------------------------------------------


def test_dev_token_is_404_without_debug(client, settings) -> None:
    settings.DEBUG = False
    assert client.get("/dev/token").status_code == 404


def test_dev_token_for_named_user(client, settings) -> None:
    settings.DEBUG = True
    response = client.get("/dev/token", {"user": "ann.b_c-1"})
    assert response.status_code == 200
    assert response["Cache-Control"] and "no-cache" in response["Cache-Control"]
    data = response.json()
    assert (data["tenant_id"], data["user_id"], data["expires_in"]) == ("demo", "ann.b_c-1", 3600)
    assert verify_token(data["token"]) == Identity("demo", "ann.b_c-1", frozenset())


def test_dev_token_keeps_one_user_per_browser(client, settings) -> None:
    settings.DEBUG = True
    first = client.get("/dev/token").json()["user_id"]
    assert first.startswith("demo-")
    assert client.get("/dev/token").json()["user_id"] == first, "the signed cookie keeps it"
    client.cookies[views.DEMO_USER_COOKIE] = "forged"  # an unsigned value is ignored
    assert client.get("/dev/token").json()["user_id"] != "forged"


@pytest.mark.parametrize("user", ["has space", "x" * 65, "a#b", "ü"])
def test_dev_token_rejects_bad_user(client, settings, user) -> None:
    settings.DEBUG = True
    response = client.get("/dev/token", {"user": user})
    assert response.status_code == 400
    assert "token" not in response.json()


def test_dev_token_without_secret(client, settings) -> None:
    settings.DEBUG = True
    settings.STREAMER_JWT_SECRET = ""
    response = client.get("/dev/token", {"user": "ann"})
    assert response.status_code == 503
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize(("debug", "offers_token"), [(True, True), (False, False)])
def test_index_tells_the_page_where_tokens_come_from(client, settings, debug, offers_token) -> None:
    settings.DEBUG = debug
    response = client.get("/")
    assert response.status_code == 200
    assert (response.context["config"]["devTokenUrl"] == "/dev/token") is offers_token
    assert response.context["config"]["wsPath"] == "/ws"


@pytest.mark.parametrize(
    ("configured", "authorization", "status"),
    [
        ("", None, 200),  # unset: open, as documented
        ("metrics-token-1", None, 401),
        ("metrics-token-1", "Bearer wrong-token", 401),
        ("metrics-token-1", "Bearer metrics-token-", 401),  # a prefix is not the token
        ("metrics-token-1", "Basic bWV0cmljcy10b2tlbi0x", 401),
        ("metrics-token-1", "metrics-token-1", 401),  # no scheme
        ("metrics-token-1", "Bearer metrics-token-1", 200),
    ],
    ids=["open", "missing", "wrong", "prefix", "basic", "no-scheme", "right"],
)
async def test_metrics_token(settings, configured, authorization, status) -> None:
    settings.STREAMER_METRICS_TOKEN = configured
    headers = list(HOST)
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    response = await HttpCommunicator(application, "GET", "/metrics", headers=headers).get_response(
        10
    )
    assert response["status"] == status
    if status == 401:
        assert dict(response["headers"])[b"WWW-Authenticate"].startswith(b"Bearer")
        assert b"streamer_" not in response["body"]
    else:
        assert b"# TYPE streamer_frames_out_total" in response["body"]


def _series(text: str, metric: str) -> dict[str, float]:
    """label text -> value of one metric's samples in Prometheus text."""
    samples = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels, value = line[len(metric) :].rsplit(" ", 1)
            samples[labels] = float(value)
    return samples


@pytest.mark.django_db(transaction=True)
async def test_published_frame_types_do_not_create_metric_series(live) -> None:
    """A publisher sends 60 frames of 60 made-up types to a socket: they are delivered,
    and counted as type "other", with no new series."""
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    from connections.models import ApiKey, Tenant

    tenant = await Tenant.objects.aget(id="acme")
    _, secret = await sync_to_async(ApiKey.issue)(tenant, "metrics-test")
    _, _, before = await get("/metrics")
    before_out = _series(before.decode(), "streamer_frames_out_total")
    async with connected() as client:
        for n in range(60):
            response = await AsyncClient().post(
                "/api/v1/publish",
                {"user_id": "alice", "frame": {"type": f"custom-{n}", "n": n}},
                content_type="application/json",
                headers={"Authorization": f"Bearer {secret}"},
            )
            assert response.status_code == 200 and response.json()["delivered"] == 1
            assert (await client.recv())["type"] == f"custom-{n}"
    _, _, after = await get("/metrics")
    after_out = _series(after.decode(), "streamer_frames_out_total")
    assert "custom-" not in after.decode()
    assert set(after_out) <= set(before_out) | {'{type="other"}'}
    assert after_out['{type="other"}'] - before_out.get('{type="other"}', 0) == 60
