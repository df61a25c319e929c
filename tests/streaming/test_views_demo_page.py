"""The demo page view and its DEBUG-only development token endpoint."""

from __future__ import annotations

import json

import jwt
import pytest
from django.test import Client
from django.test.utils import override_settings

from streaming.views import DEMO_USER_COOKIE

SECRET = "test-secret-for-the-demo-page-0123456789"


def claims(token: str) -> dict[str, object]:
    return jwt.decode(token, SECRET, algorithms=["HS256"])


@override_settings(DEBUG=True, STREAMER_JWT_SECRET=SECRET, STREAMER_JWT_ALGORITHMS=["HS256"])
def test_dev_token_keeps_one_user_per_browser() -> None:
    browser = Client()
    first = browser.get("/dev/token")
    assert first.status_code == 200
    assert "no-cache" in first["Cache-Control"] or "max-age=0" in first["Cache-Control"]
    body = first.json()
    assert body["tenant_id"] == "demo"
    assert body["user_id"].startswith("demo-")
    assert body["expires_in"] == 3600
    assert claims(body["token"])["sub"] == body["user_id"]
    assert claims(body["token"])["tenant_id"] == "demo"
    again = browser.get("/dev/token").json()
    assert again["user_id"] == body["user_id"]
    other = Client().get("/dev/token").json()
    assert other["user_id"] != body["user_id"]


@override_settings(DEBUG=True, STREAMER_JWT_SECRET=SECRET, STREAMER_JWT_ALGORITHMS=["HS256"])
def test_dev_token_for_a_named_user_and_bad_names() -> None:
    browser = Client()
    body = browser.get("/dev/token", {"user": "alice"}).json()
    assert body["user_id"] == "alice"
    assert claims(body["token"])["sub"] == "alice"
    assert browser.get("/dev/token").json()["user_id"] == "alice"  # remembered
    assert browser.get("/dev/token", {"user": "no spaces"}).status_code == 400
    assert browser.get("/dev/token", {"user": "x" * 65}).status_code == 400


@override_settings(DEBUG=True, STREAMER_JWT_SECRET="", STREAMER_JWT_ALGORITHMS=["HS256"])
def test_dev_token_without_a_signing_secret_is_unavailable() -> None:
    assert Client().get("/dev/token").status_code == 503


@override_settings(DEBUG=False, STREAMER_JWT_SECRET=SECRET)
def test_dev_token_is_404_when_debug_is_off() -> None:
    response = Client().get("/dev/token")
    assert response.status_code == 404
    assert DEMO_USER_COOKIE not in response.cookies


@pytest.mark.parametrize("debug", [True, False])
def test_index_renders_the_demo_page(debug: bool) -> None:
    with override_settings(DEBUG=debug):
        response = Client().get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<script type="module" src="/static/streaming/demo.js"></script>' in html
    assert 'aria-live="polite"' in html
    assert '<label for="token">' in html
    start = html.index('<script id="streamer-config" type="application/json">') + len(
        '<script id="streamer-config" type="application/json">'
    )
    config = json.loads(html[start : html.index("</script>", start)])
    assert config["wsPath"] == "/ws"
    assert config["devTokenUrl"] == ("/dev/token" if debug else None)
