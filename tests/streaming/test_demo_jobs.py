"""POST /dev/start-report: the demo page's "Start one on the server" (DEBUG only)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.test.utils import override_settings

from connections.models import Tenant
from storage.requests.model import RequestKey
from storage.requests.store import request_store
from storage.subscription import subscription_store
from streaming.watchers import watch_key

SECRET = "test-secret-for-the-demo-page-0123456789"
URL = "/dev/start-report"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser(moto_dynamodb: Any) -> Client:
    Tenant.objects.create(id="demo")
    client = Client()
    with override_settings(DEBUG=True, STREAMER_JWT_SECRET=SECRET):
        assert client.get("/dev/token", {"user": "alice"}).status_code == 200
    return client


@override_settings(DEBUG=True)
def test_starts_a_report_for_the_pages_user_and_subscribes_its_watchers(browser: Client) -> None:
    subscription_store.subscribe(watch_key("demo", "alice"), "c-watch", "channels", "chan-x")
    response = browser.post(URL, b'{"duration_s": 2}', content_type="application/json")
    assert response.status_code == 202
    request_id = response.json()["request_id"]
    record = request_store.get(RequestKey("demo", "alice", request_id))
    assert (record.action, record.payload["duration_s"], record.status.value) == (
        "generate_report",
        2.0,
        "PENDING",
    )
    subscribers = subscription_store.list_by_request(record.key.as_string())
    assert [s.connection_id for s in subscribers] == ["c-watch"]


@override_settings(DEBUG=True)
@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"duration_s": 601}', 400, "duration_s"),
        (b'{"duration_s": "soon"}', 400, "duration_s"),
        (b"[1]", 400, "duration_s"),
        (b"not json", 400, "duration_s"),
    ],
)
def test_bad_bodies(browser: Client, body: bytes, status: int, error: str) -> None:
    response = browser.post(URL, body, content_type="application/json")
    assert response.status_code == status
    assert error in response.json()["error"]


@override_settings(DEBUG=True)
def test_without_a_development_token_first(moto_dynamodb: Any) -> None:
    response = Client().post(URL, b"{}", content_type="application/json")
    assert response.status_code == 400
    assert "/dev/token" in response.json()["error"]


@pytest.mark.parametrize(("debug", "method", "status"), [(False, "post", 404), (True, "get", 405)])
def test_only_posts_and_only_in_debug(
    browser: Client, debug: bool, method: str, status: int
) -> None:
    with override_settings(DEBUG=debug):
        assert getattr(browser, method)(URL).status_code == status
