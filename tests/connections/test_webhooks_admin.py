"""The webhook delivery pages: list per tenant, filters, detail with attempts, resend."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse

from connections.models import Tenant
from storage import base
from storage.errors import StorageUnavailable
from storage.webhooks import Attempt, DeliveryStatus, delivery_id_for, webhook_store
from tests.support.admin import T0, messages_of

pytestmark = pytest.mark.django_db

LIST = "/admin/live/webhooks/"


def detail(delivery_id: str) -> str:
    return reverse("admin:connections_webhook_detail", args=[delivery_id])


def ids(response: Any) -> list[str]:
    return [row["delivery"].delivery_id for row in response.context["rows"]]


def add(request_id: str, *, user: str = "alice", tenant: str = "acme", at: int = T0) -> str:
    delivery_id = delivery_id_for(tenant, user, request_id, at)
    webhook_store.add(
        delivery_id=delivery_id,
        tenant_id=tenant,
        user_id=user,
        request_id=request_id,
        event_type="request.completed",
        body=orjson.dumps(
            {"type": "request.completed", "data": {"request_id": request_id}}
        ).decode(),
        now=at,
    )
    return delivery_id


def attempt(delivery_id: str, code: int, *, delivered: bool, next_at: int | None) -> None:
    claimed = webhook_store.claim(delivery_id, "s1", 60_000, now=base.now_ms())
    assert claimed is not None
    webhook_store.record_attempt(
        claimed,
        "s1",
        Attempt(T0 + 500, code, "" if delivered else f"HTTP {code}"),
        delivered=delivered,
        next_attempt_at=next_at,
    )


@pytest.fixture
def deliveries(tenant: Tenant, ddb: base.StoreConfig) -> dict[str, str]:
    """d0 (oldest, FAILED after a 500), d1 (bob, DELIVERED), d2 (PENDING); one of globex."""
    made = {
        "d0": add("r0", at=T0),
        "d1": add("r1", user="bob", at=T0 + 1),
        "d2": add("r2", at=T0 + 2),
        "g": add("g1", tenant="globex", at=T0 + 3),
    }
    attempt(made["d0"], 500, delivered=False, next_at=None)
    attempt(made["d1"], 200, delivered=True, next_at=None)
    return made


def test_a_tenants_deliveries_newest_first(staff: Client, deliveries: dict[str, str]) -> None:
    response = staff.get(LIST, {"tenant": "acme"})
    assert response.status_code == 200
    assert ids(response) == [deliveries["d2"], deliveries["d1"], deliveries["d0"]]
    page = response.content.decode()
    assert "HTTP 500" in page and "request.completed" in page


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "failed"}, ["d0"]),
        ({"status": "DELIVERED"}, ["d1"]),
        ({"user": "bob"}, ["d1"]),
        ({"user": "alice", "status": "PENDING"}, ["d2"]),
    ],
)
def test_filters(
    staff: Client, deliveries: dict[str, str], params: dict[str, str], expected: list[str]
) -> None:
    response = staff.get(LIST, {"tenant": "acme", **params})
    assert ids(response) == [deliveries[name] for name in expected]


def test_a_bad_status_filter_is_a_400(staff: Client, deliveries: dict[str, str]) -> None:
    response = staff.get(LIST, {"tenant": "acme", "status": "LOST"})
    assert response.status_code == 400
    assert "Invalid filter" in response.content.decode()


def test_the_list_when_storage_is_down(
    staff: Client, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("x")

    monkeypatch.setattr(webhook_store, "list_by_tenant", down)
    response = staff.get(LIST, {"tenant": "acme"})
    assert response.status_code == 503


def test_detail_shows_the_body_and_every_attempt(staff: Client, deliveries: dict[str, str]) -> None:
    response = staff.get(detail(deliveries["d0"]))
    assert response.status_code == 200
    page = response.content.decode()
    assert (
        "FAILED" in page and "HTTP 500" in page and "&quot;request_id&quot;: &quot;r0&quot;" in page
    )
    assert page.count('class="attempt"') == 1


@pytest.mark.parametrize("ref", ["nope", "msg_missing"])
def test_detail_of_a_bad_or_missing_id_redirects(
    staff: Client, deliveries: dict[str, str], ref: str
) -> None:
    response = staff.get(detail(ref))
    assert response.status_code == 302


@pytest.mark.parametrize("via", ["detail", "bulk"])
def test_resend_sends_a_delivery_again_under_the_same_id(
    staff: Client, deliveries: dict[str, str], via: str
) -> None:
    failed = deliveries["d0"]
    if via == "detail":
        response = staff.post(detail(failed), {"action": "resend"}, follow=True)
    else:
        response = staff.post(
            f"{LIST}?tenant=acme", {"action": "resend", "_selected": [failed]}, follow=True
        )
    assert any("will be sent again" in m for m in messages_of(response))
    again = webhook_store.get(failed)
    assert again.status is DeliveryStatus.PENDING
    assert again.next_attempt_at is not None and again.next_attempt_at <= base.now_ms()
    assert [a.status_code for a in again.attempts] == [500]  # history kept
    assert LogEntry.objects.get().object_id == failed


def test_resend_needs_the_change_permission(viewer: Client, deliveries: dict[str, str]) -> None:
    response = viewer.post(detail(deliveries["d0"]), {"action": "resend"})
    assert response.status_code == 403
    assert webhook_store.get(deliveries["d0"]).status is DeliveryStatus.FAILED


@pytest.mark.parametrize(
    ("failure", "message"),
    [("missing", "does not exist"), ("down", "storage is unavailable")],
)
def test_resend_failures_are_explained(
    staff: Client,
    deliveries: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
    message: str,
) -> None:
    target = "msg_missing"
    if failure == "down":
        target = deliveries["d0"]

        def down(*args: object, **kwargs: object) -> None:
            raise StorageUnavailable("x")

        monkeypatch.setattr(webhook_store, "resend", down)
    response = staff.post(detail(target), {"action": "resend"}, follow=True)
    assert any(message in m for m in messages_of(response))
    assert not LogEntry.objects.exists()


def test_unknown_action(staff: Client, deliveries: dict[str, str]) -> None:
    response = staff.post(detail(deliveries["d0"]), {"action": "explode"}, follow=True)
    assert "Unknown action." in messages_of(response)


def test_the_tenant_page_links_its_deliveries_and_shows_the_webhook_fields(
    staff: Client, tenant: Tenant
) -> None:
    page = staff.get(reverse("admin:connections_tenant_change", args=["acme"])).content.decode()
    assert 'name="webhook_url"' in page and 'name="webhook_secret"' in page
    assert f"{LIST}?tenant=acme" in page
    assert "Webhook deliveries" in staff.get("/admin/").content.decode()
