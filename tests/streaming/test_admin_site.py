"""The admin site: wiring, who may reach what, CSRF, and the dashboard on the index."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import resolve, reverse

from connections.models import Tenant
from storage import heartbeat
from storage.connection import ConnectionInfo, connection_store
from storage.errors import StorageUnavailable
from storage.requests.model import RequestRecord
from storage.requests.store import request_store
from streaming import stats as stats_module
from streaming.admin_site import StreamerAdminSite, site
from tests.support.admin import key, nothing_sent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("admin_state")]

PAGES = [
    "/admin/live/connections/",
    "/admin/live/connections/?tenant=acme",
    "/admin/live/connections/c1/",
    "/admin/live/requests/",
    "/admin/live/requests/?tenant=acme",
    "/admin/live/requests/acme%23alice%23r1/",
]
POSTS = [
    ("/admin/live/connections/c1/", {"action": "disconnect"}),
    ("/admin/live/connections/c1/", {"action": "send", "text": "x"}),
    ("/admin/live/connections/?tenant=acme", {"action": "disconnect", "_selected": ["c1"]}),
    ("/admin/live/requests/acme%23alice%23r1/", {"action": "cancel"}),
    ("/admin/live/requests/acme%23alice%23r1/", {"action": "retry"}),
    ("/admin/live/requests/?tenant=acme", {"action": "cancel", "_selected": ["acme#alice#r1"]}),
    ("/admin/connections/tenant/", {"action": "disable_tenants", "_selected_action": ["acme"]}),
]


@pytest.fixture
def live(
    tenant: Tenant, connect: Callable[..., ConnectionInfo], enqueue: Callable[..., RequestRecord]
) -> ConnectionInfo:
    enqueue("r1")
    return connect("c1")


def test_the_admin_site_is_ours() -> None:
    assert isinstance(admin.site, StreamerAdminSite)
    assert site is admin.site
    assert Tenant in admin.site._registry
    assert resolve("/admin/").func.__name__ == "index"
    assert reverse("admin:connections_live_list") == "/admin/live/connections/"
    assert reverse("admin:streaming_request_list") == "/admin/live/requests/"


@pytest.mark.parametrize("url", [*PAGES, "/admin/"])
def test_anonymous_users_go_to_the_login_page(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


@pytest.mark.parametrize("url", PAGES)
def test_non_staff_users_are_refused(non_staff: Client, live: ConnectionInfo, url: str) -> None:
    response = non_staff.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize(("url", "data"), POSTS)
def test_non_staff_users_cannot_act(
    non_staff: Client, live: ConnectionInfo, url: str, data: dict[str, Any]
) -> None:
    response = non_staff.post(url, data)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert nothing_sent(live.address)
    assert request_store.get(key("r1")).status.value == "PENDING"
    assert Tenant.objects.get(pk="acme").active
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize("url", PAGES)
def test_staff_without_tenant_permissions_get_403(
    bare_staff: Client, live: ConnectionInfo, url: str
) -> None:
    assert bare_staff.get(url).status_code == 403


@pytest.mark.parametrize(("url", "data"), POSTS)
def test_csrf_is_enforced_on_every_action(
    csrf_staff: Client, live: ConnectionInfo, url: str, data: dict[str, Any]
) -> None:
    response = csrf_staff.post(url, data)
    assert response.status_code == 403
    assert nothing_sent(live.address)
    assert request_store.get(key("r1")).status.value == "PENDING"
    assert Tenant.objects.get(pk="acme").active
    assert not LogEntry.objects.exists()


def test_a_csrf_token_from_the_page_is_accepted(csrf_staff: Client, live: ConnectionInfo) -> None:
    page = csrf_staff.get("/admin/live/connections/c1/")
    token = page.context["csrf_token"]
    response = csrf_staff.post(
        "/admin/live/connections/c1/", {"action": "disconnect", "csrfmiddlewaretoken": str(token)}
    )
    assert response.status_code == 302
    assert not nothing_sent(live.address)


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_other_methods_are_not_allowed(staff: Client, live: ConnectionInfo, method: str) -> None:
    for url in ("/admin/live/connections/", "/admin/live/requests/acme%23alice%23r1/"):
        assert getattr(staff, method)(url).status_code == 405


# --- index and dashboard --------------------------------------------------------------------


def test_index_lists_the_live_pages(staff: Client, tenant: Tenant, moto_dynamodb: object) -> None:
    body = staff.get("/admin/").content.decode()
    assert "Live data (DynamoDB)" in body
    assert 'href="/admin/live/connections/"' in body and 'href="/admin/live/requests/"' in body
    # ...in the sidebar of other pages as well, but not on an app's own index.
    assert "Live data (DynamoDB)" not in staff.get("/admin/connections/").content.decode()


def test_dashboard(
    staff: Client,
    tenant: Tenant,
    connect: Callable[..., ConnectionInfo],
    enqueue: Callable[..., RequestRecord],
) -> None:
    Tenant.objects.create(id="globex", max_connections=0, active=False)
    for i in range(4):
        connect(f"c{i}")
    connect("g1", tenant_id="globex")
    now = stats_module.now_ms()
    enqueue("old", now=now - 90_000)
    enqueue("new", now=now - 1000)
    enqueue("run", now=now - 5000)
    request_store.claim(key("run"), "w1", 30_000)
    enqueue("done", now=now - 5000)
    request_store.cancel(key("done"))
    heartbeat.beat("host:1:alive", started_at=now - 3_600_000, jobs=2)
    heartbeat.beat("host:2:dead", started_at=now - 7_200_000, jobs=0, now=now - 120_000)

    response = staff.get("/admin/")
    assert response.status_code == 200
    dashboard = response.context["dashboard"]
    stats = dashboard["stats"]
    assert stats.tenants_total == 2 and stats.tenants_active == 1
    assert [(t.tenant_id, t.connections) for t in dashboard["tenants"]] == [
        ("acme", 4),
        ("globex", 1),
    ]
    assert stats.requests_by_status == {"PENDING": 2, "RETRYING": 0, "PROCESSING": 1}
    assert stats.oldest_waiting.request_id == "old"
    assert 90_000 <= stats.oldest_waiting.waiting_ms < 120_000
    assert (dashboard["alive"], dashboard["stale"]) == (1, 1)
    body = response.content.decode()
    for text in (
        "Live status",
        "Connections per tenant",
        "over",
        "unlimited",
        "disabled",
        "Oldest pending",
        "acme / alice / old",
        "waiting 1 min",
        "host:1:alive",
        "alive",
        "host:2:dead",
        "stale",
        "+1 stale",
        "1 h 0 min",
    ):
        assert text in body, text
    assert reverse("admin:streaming_request_detail", args=["acme#alice#old"]) in body


def test_dashboard_figures_are_cached(
    staff: Client, tenant: Tenant, connect: Callable[..., ConnectionInfo]
) -> None:
    connect("c1")
    first = staff.get("/admin/").context["dashboard"]["stats"]
    connect("c2")
    assert staff.get("/admin/").context["dashboard"]["stats"] is not first  # a copy…
    assert staff.get("/admin/").context["dashboard"]["stats"].connections_total == 1  # …cached


def test_dashboard_without_workers_or_requests(
    staff: Client, tenant: Tenant, moto_dynamodb: object
) -> None:
    body = staff.get("/admin/").content.decode()
    assert "none waiting" in body and "No worker has reported a heartbeat" in body


def test_dashboard_when_storage_is_down(
    staff: Client, tenant: Tenant, moto_dynamodb: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("x")

    monkeypatch.setattr(request_store, "list_due", down)
    monkeypatch.setattr(heartbeat, "list_heartbeats", down)
    monkeypatch.setattr(connection_store, "count_by_tenant", down)
    response = staff.get("/admin/")
    assert response.status_code == 200
    body = response.content.decode()
    for text in (
        "Active requests unavailable",
        "Worker heartbeats unavailable",
        "Some connection counts are unavailable",
    ):
        assert text in body, text


def test_dashboard_hidden_from_staff_without_tenant_permission(
    bare_staff: Client, tenant: Tenant
) -> None:
    response = bare_staff.get("/admin/")
    assert response.status_code == 200
    assert "dashboard" not in response.context or response.context.get("dashboard") is None
    assert "Live data (DynamoDB)" not in response.content.decode()


def test_dashboard_lists_at_most_twenty_tenants(staff: Client, moto_dynamodb: object) -> None:
    Tenant.objects.bulk_create([Tenant(id=f"t{i:02d}") for i in range(23)])
    response = staff.get("/admin/")
    assert len(response.context["dashboard"]["tenants"]) == 20
    assert "… and 3 more tenants." in response.content.decode()
