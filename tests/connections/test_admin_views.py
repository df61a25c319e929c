"""The live connection pages: list, filters, cursor pages, sorting, detail, actions."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse

from connections import admin_support
from connections.admin_views import _request_url
from connections.models import Tenant
from protocol import codec
from storage.connection import ConnectionInfo, connection_store
from storage.errors import StorageUnavailable
from storage.subscription import subscription_store
from tests.support.admin import T0, messages_of, nothing_sent, receive

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("admin_state")]

LIST = "/admin/live/connections/"


def detail(connection_id: str) -> str:
    return reverse("admin:connections_live_detail", args=[connection_id])


def rows(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [row["info"].connection_id for row in response.context["rows"]]


@pytest.fixture
def three(tenant: Tenant, connect: Callable[..., ConnectionInfo]) -> dict[str, ConnectionInfo]:
    """c1 (oldest, seen last), c2, c3 (newest, seen first) of acme; x1 of globex."""
    return {
        "c1": connect(
            "c1",
            connected_at=T0,
            last_seen=T0 + 9000,
            user_agent="UA-1/1.0",
            source_ip="10.0.0.1",
            permissions=("reports",),
        ),
        "c2": connect("c2", user_id="bob", connected_at=T0 + 1000, last_seen=T0 + 5000),
        "c3": connect("c3", connected_at=T0 + 2000, last_seen=T0 + 2000),
        "x1": connect("x1", tenant_id="globex", connected_at=T0 + 3000),
    }


def test_without_a_tenant_the_list_asks_for_one(staff: Client, tenant: Tenant) -> None:
    response = staff.get(LIST)
    assert response.status_code == 200
    assert response.context["rows"] == []
    body = response.content.decode()
    assert "Choose a tenant" in body
    assert '<option value="acme">acme — Acme Inc</option>' in body


def test_list_shows_one_tenants_connections_newest_first(
    staff: Client, three: dict[str, ConnectionInfo]
) -> None:
    response = staff.get(LIST, {"tenant": "acme"})
    assert response.status_code == 200
    assert rows(response) == ["c3", "c2", "c1"]
    assert response.context["total"] == 3
    assert response.context["next_url"] == ""
    body = response.content.decode()
    assert 'href="/admin/live/connections/c1/"' in body
    assert "10.0.0.1" in body and "UA-1/1.0" in body and "reports" in body
    assert "3 live for tenant acme" in body
    assert 'name="_selected" value="c3"' in body  # the action checkboxes
    assert "csrfmiddlewaretoken" in body


def test_list_filters_by_user(staff: Client, three: dict[str, ConnectionInfo]) -> None:
    response = staff.get(LIST, {"tenant": "acme", "user": "bob"})
    assert rows(response) == ["c2"]
    assert staff.get(LIST, {"tenant": "acme", "user": "nobody"}).context["rows"] == []


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-connected", ["c3", "c2", "c1"]),
        ("connected", ["c1", "c2", "c3"]),
        ("-last_seen", ["c1", "c2", "c3"]),
        ("last_seen", ["c3", "c2", "c1"]),
        ("bogus", ["c3", "c2", "c1"]),
    ],
)
def test_list_sorts_within_the_page(
    staff: Client, three: dict[str, ConnectionInfo], sort: str, expected: list[str]
) -> None:
    response = staff.get(LIST, {"tenant": "acme", "o": sort})
    assert rows(response) == expected
    headers = {h["key"]: h for h in response.context["headers"]}
    current = sort.lstrip("-") if sort != "bogus" else "connected"
    assert headers[current]["sorted"] in {"ascending", "descending"}
    other = "last_seen" if current == "connected" else "connected"
    assert headers[other]["sorted"] == ""
    assert "o=-" + other in headers[other]["url"]


def test_cursor_pagination(
    staff: Client, tenant: Tenant, connect: Callable[..., ConnectionInfo]
) -> None:
    for i in range(53):
        connect(f"c{i:02d}", user_id=f"u{i % 3}", connected_at=T0 + i)
    first = staff.get(LIST, {"tenant": "acme"})
    assert len(rows(first)) == admin_support.PAGE_SIZE == 50
    assert rows(first)[0] == "c52"
    next_url = first.context["next_url"]
    assert next_url and first.context["first_url"] == ""
    query = parse_qs(urlsplit(next_url).query)
    assert query["tenant"] == ["acme"] and query["cursor"][0]
    assert 'class="next-page"' in first.content.decode()
    second = staff.get(LIST + next_url)
    assert rows(second) == ["c02", "c01", "c00"]
    assert second.context["next_url"] == ""
    assert second.context["first_url"] == "?tenant=acme&o=-connected"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"tenant": "acme", "cursor": "garbage!"}, 400),
        ({"tenant": "a#b"}, 400),
        ({"tenant": "acme", "user": "u" * 300}, 400),
    ],
)
def test_list_rejects_bad_filters(
    staff: Client, three: dict[str, ConnectionInfo], params: dict[str, str], status: int
) -> None:
    response = staff.get(LIST, params)
    assert response.status_code == status
    assert "Invalid filter" in response.content.decode()
    assert response.context["rows"] == []


def test_list_when_storage_is_down(
    staff: Client, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("storage unavailable during connection.list_by_tenant")

    monkeypatch.setattr(connection_store, "list_by_tenant", down)
    response = staff.get(LIST, {"tenant": "acme"})
    assert response.status_code == 503
    assert "Storage is unavailable" in response.content.decode()


def test_detail_page_shows_everything(staff: Client, three: dict[str, ConnectionInfo]) -> None:
    subscription_store.subscribe("acme#alice#r1", "c1", "channels", three["c1"].address)
    response = staff.get(detail("c1"))
    assert response.status_code == 200
    body = response.content.decode()
    for text in (
        "c1",
        "acme",
        "alice",
        "channels",
        three["c1"].address,
        "UA-1/1.0",
        "10.0.0.1",
        "reports",
        "Subscriptions (1)",
        "acme#alice#r1",
        "Send a test frame",
        "Disconnect",
        "2023-11-14 22:13:20 UTC",
    ):
        assert text in body, text
    assert reverse("admin:streaming_request_detail", args=["acme#alice#r1"]) in body


def test_detail_of_an_apigw_connection_names_the_endpoint(
    staff: Client, tenant: Tenant, connect: Callable[..., ConnectionInfo]
) -> None:
    connect(
        "abc=", transport="apigw", address="https://x.execute-api.us-east-1.amazonaws.com/prod#abc="
    )
    body = staff.get(detail("abc=")).content.decode()
    assert "Endpoint" in body and "execute-api" in body and "No subscriptions." in body


def test_detail_when_subscriptions_cannot_be_read(
    staff: Client, three: dict[str, ConnectionInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(connection_id: str) -> None:
        raise StorageUnavailable("x")

    monkeypatch.setattr(subscription_store, "list_by_connection", down)
    response = staff.get(detail("c1"))
    assert response.status_code == 200
    assert "subscriptions cannot be listed" in response.content.decode()


@pytest.mark.parametrize("connection_id", ["missing", "x" * 300])
def test_detail_of_an_unknown_connection_redirects_with_a_message(
    staff: Client, tenant: Tenant, moto_dynamodb: object, connection_id: str
) -> None:
    response = staff.get(detail(connection_id), follow=True)
    assert response.redirect_chain[0][0] == LIST
    assert any("is not registered" in m for m in messages_of(response))


def test_detail_when_storage_is_down(
    staff: Client, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(connection_id: str) -> None:
        raise StorageUnavailable("x")

    monkeypatch.setattr(connection_store, "get", down)
    response = staff.get(detail("c1"))
    assert response.status_code == 503
    assert "cannot be read now" in response.content.decode()


# --- actions --------------------------------------------------------------------------------


def test_disconnect_closes_the_socket_and_is_logged(
    staff: Client, superuser: object, three: dict[str, ConnectionInfo]
) -> None:
    response = staff.post(detail("c1"), {"action": "disconnect", "tenant": "acme"}, follow=True)
    assert response.redirect_chain[0][0] == LIST + "?tenant=acme"
    assert any("close 1000 sent" in m for m in messages_of(response))
    message = receive(three["c1"].address)
    assert message == {
        "type": "streamer.close",
        "code": 1000,
        "reason": "Disconnected by an administrator",
    }
    entry = LogEntry.objects.get()
    assert entry.user == superuser and entry.object_id == "c1"
    assert entry.content_type is None and "Disconnected" in entry.change_message
    assert nothing_sent(three["c2"].address)


def test_disconnect_of_an_unknown_connection_warns_and_logs_nothing(
    staff: Client, tenant: Tenant, moto_dynamodb: object
) -> None:
    response = staff.post(detail("ghost"), {"action": "disconnect"}, follow=True)
    assert any("was not disconnected" in m for m in messages_of(response))
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize(
    ("text", "sent"),
    [("hello there", "hello there"), ("", "Test message from the Streamer admin")],
)
def test_send_a_test_frame(
    staff: Client, three: dict[str, ConnectionInfo], text: str, sent: str
) -> None:
    response = staff.post(detail("c2"), {"action": "send", "text": text}, follow=True)
    assert response.redirect_chain[0][0] == detail("c2")
    assert any("Test frame sent" in m for m in messages_of(response))
    message = receive(three["c2"].address)
    assert message["type"] == "streamer.frame" and message["frame_type"] == "message"
    frame = codec.loads(message["text"])
    assert frame["type"] == "message" and frame["text"] == sent and frame["timestamp"] > 0
    assert LogEntry.objects.get().change_message == f"Sent a test frame: {sent}"


def test_send_refuses_a_long_text(staff: Client, three: dict[str, ConnectionInfo]) -> None:
    response = staff.post(detail("c2"), {"action": "send", "text": "x" * 1001}, follow=True)
    assert any("longer than 1000" in m for m in messages_of(response))
    assert nothing_sent(three["c2"].address)
    assert not LogEntry.objects.exists()


def test_send_to_an_unknown_connection_warns(
    staff: Client, tenant: Tenant, moto_dynamodb: object
) -> None:
    response = staff.post(detail("ghost"), {"action": "send", "text": "hi"}, follow=True)
    assert any("did not reach" in m for m in messages_of(response))
    assert not LogEntry.objects.exists()


def test_an_unknown_detail_action_is_an_error(
    staff: Client, three: dict[str, ConnectionInfo]
) -> None:
    response = staff.post(detail("c1"), {"action": "explode"}, follow=True)
    assert any("Unknown action" in m for m in messages_of(response))
    assert nothing_sent(three["c1"].address)


def test_an_action_that_hits_a_storage_error_reports_failure(
    staff: Client, three: dict[str, ConnectionInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(connection_id: str) -> None:
        raise StorageUnavailable("x")

    monkeypatch.setattr(connection_store, "get", down)
    response = staff.post(detail("c1"), {"action": "disconnect"}, follow=True)
    assert any("was not disconnected" in m for m in messages_of(response))
    response = staff.post(detail("c1"), {"action": "send"}, follow=True)
    assert any("did not reach" in m for m in messages_of(response))


def test_bulk_disconnect(staff: Client, three: dict[str, ConnectionInfo]) -> None:
    response = staff.post(
        LIST + "?tenant=acme",
        {"action": "disconnect", "_selected": ["c1", "c3", "ghost"]},
        follow=True,
    )
    assert response.redirect_chain[0][0] == LIST + "?tenant=acme"
    texts = messages_of(response)
    assert "Disconnected 2 of 3 connection(s)." in texts
    assert any("Not reached" in m and "ghost" in m for m in texts)
    assert receive(three["c1"].address)["type"] == "streamer.close"
    assert receive(three["c3"].address)["code"] == 1000
    assert nothing_sent(three["c2"].address)
    assert sorted(LogEntry.objects.values_list("object_id", flat=True)) == ["c1", "c3"]


def test_bulk_send(staff: Client, three: dict[str, ConnectionInfo]) -> None:
    response = staff.post(
        LIST + "?tenant=acme", {"action": "send", "_selected": ["c2"], "text": "ping"}, follow=True
    )
    assert "Sent a test frame to 1 of 1 connection(s)." in messages_of(response)
    assert codec.loads(receive(three["c2"].address)["text"])["text"] == "ping"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "", "_selected": ["c1"]}, "Choose an action."),
        ({"action": "disconnect"}, "Select at least one connection."),
        ({"action": "send", "_selected": ["c1"], "text": "y" * 2000}, "longer than 1000"),
    ],
)
def test_bulk_action_mistakes(
    staff: Client, three: dict[str, ConnectionInfo], data: dict[str, object], message: str
) -> None:
    response = staff.post(LIST + "?tenant=acme", data, follow=True)
    assert any(message in m for m in messages_of(response))
    assert nothing_sent(three["c1"].address)
    assert not LogEntry.objects.exists()


def test_view_only_staff_sees_no_action_controls(
    viewer: Client, three: dict[str, ConnectionInfo]
) -> None:
    body = viewer.get(LIST, {"tenant": "acme"}).content.decode()
    assert "c1" in body and 'name="_selected"' not in body
    body = viewer.get(detail("c1")).content.decode()
    assert "Send a test frame" not in body


def test_disconnect_is_refused_without_change_permission(
    viewer: Client, three: dict[str, ConnectionInfo]
) -> None:
    assert viewer.post(detail("c1"), {"action": "disconnect"}).status_code == 403
    assert viewer.post(LIST, {"action": "disconnect", "_selected": ["c1"]}).status_code == 403
    assert nothing_sent(three["c1"].address)
    assert not LogEntry.objects.exists()


def test_request_links_need_a_valid_key() -> None:
    assert _request_url("", "admin") == ""
    assert _request_url("acme#alice#r1", "admin") == "/admin/live/requests/acme%23alice%23r1/"


# --- before a tenant is chosen ----------------------------------------------------------------


def overview(response) -> list[tuple[str, int | None, str]]:  # type: ignore[no-untyped-def]
    return [
        (row["tenant"].id, row["live"], row["url"])
        for row in response.context["tenant_overview"]["rows"]
    ]


def test_without_a_tenant_the_list_shows_each_tenants_live_count(
    staff: Client, three: dict[str, ConnectionInfo]
) -> None:
    Tenant.objects.create(id="globex", name="Globex", active=False)
    Tenant.objects.create(id="initech")
    response = staff.get(LIST)
    assert overview(response) == [
        ("acme", 3, "?tenant=acme"),
        ("globex", 1, "?tenant=globex"),
        ("initech", 0, "?tenant=initech"),
    ]
    assert response.context["tenant_overview"]["more"] is False
    body = response.content.decode()
    assert "Live connections per tenant" in body
    assert '<a href="?tenant=globex">globex</a>' in body and "disabled" in body
    assert '<td class="num field-live">3</td>' in body


def test_the_overview_shows_unknown_counts_last_and_says_when_tenants_are_left_out(
    staff: Client,
    three: dict[str, ConnectionInfo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Tenant.objects.create(id="globex")
    Tenant.objects.create(id="zeta")
    monkeypatch.setattr("connections.admin_views.MAX_COUNTED_TENANTS", 2)
    real = connection_store.count_by_tenant

    def flaky(tenant_id: str) -> int:
        if tenant_id == "acme":
            raise StorageUnavailable("x")
        return real(tenant_id)

    monkeypatch.setattr(connection_store, "count_by_tenant", flaky)
    response = staff.get(LIST)
    assert overview(response) == [("globex", 1, "?tenant=globex"), ("acme", None, "?tenant=acme")]
    assert response.context["tenant_overview"]["more"] is True
    body = response.content.decode()
    assert '<td class="num field-live">?</td>' in body and "More tenants exist" in body


def test_with_a_tenant_there_is_no_overview(
    staff: Client, three: dict[str, ConnectionInfo]
) -> None:
    response = staff.get(LIST, {"tenant": "acme"})
    assert response.context["tenant_overview"] == []
    assert "Live connections per tenant" not in response.content.decode()
