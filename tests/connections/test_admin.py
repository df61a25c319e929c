"""Tenants and API keys in the admin: list, live counts, filters, enable/disable, keys."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from connections import admin_support
from connections.models import ApiKey, Tenant
from connections.tenants import get_tenant_policy
from storage.connection import ConnectionInfo, connection_store
from storage.errors import StorageUnavailable
from tests.support.admin import messages_of, nothing_sent, receive

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("admin_state")]

TENANTS = "/admin/connections/tenant/"
KEYS = "/admin/connections/apikey/"


@pytest.fixture
def tenants(moto_dynamodb: object) -> list[Tenant]:
    return [
        Tenant.objects.create(id="acme", name="Acme Inc", max_connections=2),
        Tenant.objects.create(id="globex", name="Globex", max_connections=0, active=False),
        Tenant.objects.create(id="initech", name="Initech", rate_limit_frames=5),
    ]


def result_ids(response: Any) -> list[str]:
    return [t.id for t in response.context["cl"].result_list]


def test_changelist_shows_live_counts_and_limits(
    staff: Client, tenants: list[Tenant], connect: Callable[..., ConnectionInfo]
) -> None:
    connect("a1")
    connect("a2", user_id="bob")
    connect("i1", tenant_id="initech")
    response = staff.get(TENANTS)
    assert response.status_code == 200
    body = response.content.decode()
    assert '<a href="/admin/live/connections/?tenant=acme" class="over-limit">2</a>' in body
    assert '<a href="/admin/live/connections/?tenant=initech">1</a>' in body
    assert '<a href="/admin/live/connections/?tenant=globex">0</a>' in body
    assert "live connections" in body.lower()


def test_counts_are_cached_for_a_few_seconds(
    staff: Client, tenants: list[Tenant], connect: Callable[..., ConnectionInfo]
) -> None:
    connect("a1")
    assert admin_support.connection_counts(["acme"]) == {"acme": 1}
    connect("a2")
    assert admin_support.connection_counts(["acme"]) == {"acme": 1}  # cached
    assert admin_support.connection_counts(["acme"], use_cache=False) == {"acme": 2}
    admin_support.forget_count("acme")
    assert admin_support.connection_counts(["acme"]) == {"acme": 2}


def test_counts_are_capped_and_failures_are_none(
    tenants: list[Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_support, "MAX_COUNTED_TENANTS", 1)
    assert admin_support.connection_counts(["acme", "globex"]) == {"acme": 0, "globex": None}

    def down(tenant_id: str) -> int:
        raise StorageUnavailable("x")

    monkeypatch.setattr(connection_store, "count_by_tenant", down)
    assert admin_support.connection_counts(["initech"]) == {"initech": None}


def test_changelist_when_counts_are_unavailable(
    staff: Client, tenants: list[Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(tenant_id: str) -> int:
        raise StorageUnavailable("x")

    monkeypatch.setattr(connection_store, "count_by_tenant", down)
    response = staff.get(TENANTS)
    assert response.status_code == 200
    assert response.content.decode().count(">unavailable</a>") == 3


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["acme", "globex", "initech"]),
        ({"q": "glob"}, ["globex"]),
        ({"q": "Acme"}, ["acme"]),
        ({"active__exact": "1"}, ["acme", "initech"]),
        ({"active__exact": "0"}, ["globex"]),
        ({"limits": "unlimited"}, ["globex"]),
        ({"limits": "limited"}, ["acme", "initech"]),
        ({"limits": "custom_rate"}, ["initech"]),
    ],
)
def test_search_and_filters(
    staff: Client, tenants: list[Tenant], params: dict[str, str], expected: list[str]
) -> None:
    assert result_ids(staff.get(TENANTS, params)) == expected


def test_change_form_shows_limits_keys_and_live_count(staff: Client, tenants: list[Tenant]) -> None:
    ApiKey.issue(tenants[0], "ci")
    body = staff.get(f"{TENANTS}acme/change/").content.decode()
    for text in (
        "Limits",
        "max_connections",
        "rate_limit_frames",
        "API keys",
        "sk_",
        "ci",
        "/admin/live/connections/?tenant=acme",
    ):
        assert text in body, text
    assert 'name="id"' not in body  # the id is fixed once made
    add = staff.get(f"{TENANTS}add/")
    assert add.status_code == 200 and 'name="id"' in add.content.decode()


def test_adding_a_tenant_from_the_form(staff: Client, moto_dynamodb: object) -> None:
    response = staff.post(
        f"{TENANTS}add/",
        {
            "id": "hooli",
            "name": "Hooli",
            "active": "on",
            "max_connections": "10",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    assert Tenant.objects.get(pk="hooli").max_connections == 10


def test_disable_action_closes_live_connections_with_4403(
    staff: Client, superuser: Any, tenants: list[Tenant], connect: Callable[..., ConnectionInfo]
) -> None:
    a1, a2 = connect("a1"), connect("a2", user_id="bob")
    i1 = connect("i1", tenant_id="initech")
    assert get_tenant_policy("acme").active  # type: ignore[union-attr]  (now cached)
    response = staff.post(
        TENANTS, {"action": "disable_tenants", "_selected_action": ["acme"]}, follow=True
    )
    assert "Tenant acme disabled: closed 2 live connection(s) with 4403." in messages_of(response)
    assert not Tenant.objects.get(pk="acme").active
    assert not get_tenant_policy("acme").active  # type: ignore[union-attr]  (cache told)
    for info in (a1, a2):
        assert receive(info.address) == {
            "type": "streamer.close",
            "code": 4403,
            "reason": "Tenant disabled",
        }
    assert nothing_sent(i1.address)
    entry = LogEntry.objects.get()
    assert entry.user == superuser and entry.object_id == "acme"
    assert "closed 2 live connection(s)" in entry.get_change_message()


def test_disable_reports_unreachable_sockets_and_storage_failures(
    staff: Client,
    tenants: list[Tenant],
    connect: Callable[..., ConnectionInfo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connect("a1", transport="apigw", address="https://127.0.0.1:1/prod#a1")

    async def fails(connection_id: str, code: int = 1000, reason: str = "") -> bool:
        return False

    monkeypatch.setattr(admin_support.manager, "disconnect", fails)
    response = staff.post(
        TENANTS, {"action": "disable_tenants", "_selected_action": ["acme"]}, follow=True
    )
    assert any(
        "closed 0 live connection(s) with 4403. 1 could not be reached." in m
        for m in messages_of(response)
    )

    def down(tenant_id: str) -> Any:
        raise StorageUnavailable("x")

    monkeypatch.setattr(connection_store, "iter_by_tenant", down)
    response = staff.post(
        TENANTS, {"action": "disable_tenants", "_selected_action": ["initech"]}, follow=True
    )
    assert any("could not be listed" in m for m in messages_of(response))
    assert not Tenant.objects.get(pk="initech").active


def test_unticking_active_in_the_form_also_closes_connections(
    staff: Client, tenants: list[Tenant], connect: Callable[..., ConnectionInfo]
) -> None:
    a1 = connect("a1")
    form = {
        "name": "Acme Inc",
        "max_connections": "2",
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
    }
    response = staff.post(f"{TENANTS}acme/change/", form, follow=True)
    assert response.status_code == 200
    assert receive(a1.address)["code"] == 4403
    # Saving an already disabled tenant closes nothing more.
    staff.post(f"{TENANTS}acme/change/", form)
    assert nothing_sent(a1.address)


def test_enable_action(staff: Client, tenants: list[Tenant]) -> None:
    response = staff.post(
        TENANTS, {"action": "enable_tenants", "_selected_action": ["globex", "acme"]}, follow=True
    )
    assert "Enabled 1 tenant(s)." in messages_of(response)
    assert Tenant.objects.get(pk="globex").active
    assert LogEntry.objects.get().object_id == "globex"


def shown_secret(response: Any) -> str:
    """The one new key of a key-creation response, which must carry it nowhere but in
    the page: not in a cookie (messages), not cacheable."""
    assert response.status_code == 200
    page = response.content.decode()
    secrets = re.findall(r'<code class="api-key">(sk_[^<]+)</code>', page)
    assert len(secrets) == 1
    [secret] = secrets
    assert page.count(secret) == 1
    for cookie in response.cookies.values():
        assert secret not in cookie.value and cookie.key != "messages"
    assert "no-store" in response["Cache-Control"]
    assert not messages_of(response) or all(secret not in m for m in messages_of(response))
    return secret


def test_create_api_key_action_shows_the_secret_once(staff: Client, tenants: list[Tenant]) -> None:
    response = staff.post(TENANTS, {"action": "create_api_key", "_selected_action": ["acme"]})
    secret = shown_secret(response)
    row = ApiKey.authenticate(secret)
    assert row is not None and row.tenant_id == "acme" and row.name == "created by root"
    assert secret not in row.key_hash
    for page in (f"{TENANTS}acme/change/", TENANTS, KEYS):  # shown once
        assert secret not in staff.get(page).content.decode()
    assert "Created API key" in LogEntry.objects.get().get_change_message()


def test_create_api_key_action_for_several_tenants(staff: Client, tenants: list[Tenant]) -> None:
    response = staff.post(
        TENANTS, {"action": "create_api_key", "_selected_action": ["acme", "globex"]}
    )
    page = response.content.decode()
    secrets = re.findall(r'<code class="api-key">(sk_[^<]+)</code>', page)
    owners = {ApiKey.authenticate(s).tenant_id for s in secrets}  # type: ignore[union-attr]
    assert owners == {"acme", "globex"} and len(secrets) == 2
    assert not any(s in c.value for s in secrets for c in response.cookies.values())


def test_add_api_key_form_shows_the_secret_once(staff: Client, tenants: list[Tenant]) -> None:
    form = staff.get(f"{KEYS}add/?tenant=acme")
    assert form.status_code == 200 and 'value="acme" selected' in form.content.decode()
    response = staff.post(f"{KEYS}add/", {"tenant": "acme", "name": "deploy"})
    secret = shown_secret(response)
    row = ApiKey.authenticate(secret)
    assert row is not None and row.name == "deploy"
    assert ApiKey.objects.count() == 1
    change = staff.get(f"{KEYS}{row.pk}/change/")
    assert change.status_code == 200 and secret not in change.content.decode()
    assert secret not in staff.get(KEYS).content.decode()
    # Renaming keeps the key.
    staff.post(f"{KEYS}{row.pk}/change/", {"name": "renamed"})
    assert ApiKey.authenticate(secret).name == "renamed"  # type: ignore[union-attr]
    assert LogEntry.objects.filter(object_id=str(row.pk)).count() == 2


def test_revoke_action(staff: Client, tenants: list[Tenant]) -> None:
    row, secret = ApiKey.issue(tenants[0], "ci")
    _other, other_secret = ApiKey.issue(tenants[0], "keep")
    response = staff.post(
        KEYS, {"action": "revoke_keys", "_selected_action": [row.pk]}, follow=True
    )
    assert "Revoked 1 API key(s)." in messages_of(response)
    assert ApiKey.authenticate(secret) is None
    assert ApiKey.authenticate(other_secret) is not None
    listing = staff.get(KEYS, {"revoked_at__isempty": "0"})
    assert [k.pk for k in listing.context["cl"].result_list] == [row.pk]


def test_tenant_actions_need_change_permission(viewer: Client, tenants: list[Tenant]) -> None:
    response = viewer.get(TENANTS)
    assert response.status_code == 200
    assert "disable_tenants" not in response.content.decode()
    viewer.post(TENANTS, {"action": "disable_tenants", "_selected_action": ["acme"]})
    assert Tenant.objects.get(pk="acme").active
