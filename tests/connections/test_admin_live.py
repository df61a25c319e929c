"""The shared base of the live admin pages (connections/admin_live.py) and its template
filter: filters in URLs, secondary lists, breadcrumbs, the page layout both kinds get."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from connections.admin_live import ListQuery, listed
from connections.models import Tenant
from connections.templatetags.live_admin import when
from storage.connection import ConnectionInfo
from storage.errors import StorageUnavailable
from storage.requests.model import RequestRecord

pytestmark = pytest.mark.usefixtures("admin_state")

CONNECTIONS = "/admin/live/connections/"
REQUESTS = "/admin/live/requests/"


@pytest.mark.parametrize(
    ("query", "changes", "expected"),
    [
        (ListQuery("acme", ""), {}, "?tenant=acme"),
        (ListQuery("acme", "bob", {"o": "-connected"}), {}, "?tenant=acme&user=bob&o=-connected"),
        (ListQuery("acme", "", {"status": "FAILED"}), {"status": ""}, "?tenant=acme"),
        (ListQuery("acme", "", {"o": "x"}, "c1"), {"cursor": "c2"}, "?tenant=acme&o=x&cursor=c2"),
        (ListQuery("", ""), {}, ""),
    ],
)
def test_list_query_urls_keep_the_filters_and_drop_the_cursor(
    query: ListQuery, changes: dict[str, str], expected: str
) -> None:
    assert query.url(**changes) == expected


def test_listed_maps_rows_or_reports_storage_down() -> None:
    assert listed(lambda: [1, 2], lambda n: {"n": n}, "things") == ([{"n": 1}, {"n": 2}], "")

    def down() -> list[int]:
        raise StorageUnavailable("x")

    assert listed(down, lambda n: {"n": n}, "things") == (
        [],
        "Storage is unavailable: things cannot be listed now.",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "2023-11-14 22:13:20 UTC",
            '<span class="live-nowrap">2023-11-14</span> '
            '<span class="live-nowrap">22:13:20 UTC</span>',
        ),
        ("", ""),
        ("yesterday", "yesterday"),
        ("<b> x", '<span class="live-nowrap">&lt;b&gt;</span> <span class="live-nowrap">x</span>'),
    ],
)
def test_when_breaks_only_between_date_and_time(value: str, expected: str) -> None:
    assert str(when(value)) == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "crumbs"),
    [
        (CONNECTIONS, ["Home", "Connections", "Live connections"]),
        (CONNECTIONS + "?tenant=acme", ["Home", "Connections", "Live connections", "acme"]),
        (REQUESTS, ["Home", "Requests"]),
        (REQUESTS + "?tenant=acme", ["Home", "Requests", "acme"]),
    ],
)
def test_list_pages_use_the_full_width_and_say_where_they_are(
    staff: Client, tenant: Tenant, moto_dynamodb: object, url: str, crumbs: list[str]
) -> None:
    response = staff.get(url)
    assert response.status_code == 200
    assert [label for label, _ in response.context["breadcrumbs"]] == crumbs
    body = response.content.decode()
    assert 'id="nav-sidebar"' not in body  # the table gets the page's width
    assert "change-list" in body and 'id="changelist-filter"' in body


@pytest.mark.django_db
def test_list_rows_keep_ids_whole_and_break_times_only_between_date_and_time(
    staff: Client,
    tenant: Tenant,
    connect: Callable[..., ConnectionInfo],
    enqueue: Callable[..., RequestRecord],
) -> None:
    connect("c1", connected_at=1_700_000_000_000, last_seen=1_700_000_000_000)
    enqueue("r1", now=1_700_000_000_000)
    for url, id_cell in ((CONNECTIONS, "field-connection_id"), (REQUESTS, "field-request_id")):
        body = staff.get(url, {"tenant": "acme"}).content.decode()
        assert '<span class="live-nowrap">2023-11-14</span>' in body, url
        assert f'class="{id_cell} live-id"' in body, url


@pytest.mark.django_db
def test_detail_pages_keep_the_navigation_and_link_back_to_their_tenant(
    staff: Client,
    tenant: Tenant,
    connect: Callable[..., ConnectionInfo],
    enqueue: Callable[..., RequestRecord],
) -> None:
    connect("c1")
    enqueue("r1")
    connection = staff.get(CONNECTIONS + "c1/")
    assert connection.context["breadcrumbs"] == [
        ("Home", "/admin/"),
        ("Connections", "/admin/connections/"),
        ("Live connections", CONNECTIONS + "?tenant=acme"),
        ("Connection c1", ""),
    ]
    request = staff.get(REQUESTS + "acme%23alice%23r1/")
    assert request.context["breadcrumbs"][1:] == [
        ("Requests", REQUESTS + "?tenant=acme"),
        ("Request r1", ""),
    ]
    for response in (connection, request):
        body = response.content.decode()
        assert 'id="nav-sidebar"' in body and "change-form" in body
