"""create_tenant, through call_command."""

from __future__ import annotations

import pytest
from django.core.management import CommandError

from connections.models import Tenant
from connections.tenants import get_tenant_policy
from tests.support.commands import stdout_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("asgi_settings")]


def test_create_tenant_creates_with_defaults() -> None:
    output = stdout_of("create_tenant", "acme")
    tenant = Tenant.objects.get(pk="acme")
    assert tenant.name == "acme" and tenant.active is True
    assert tenant.max_connections == 1000
    assert "created" in output and "acme" in output


def test_create_tenant_with_options() -> None:
    output = stdout_of("create_tenant", "acme", "--name", "Acme Inc", "--max-connections", "0")
    tenant = Tenant.objects.get(pk="acme")
    assert (tenant.name, tenant.max_connections) == ("Acme Inc", 0)
    assert "unlimited" in output


def test_create_tenant_is_idempotent_update() -> None:
    stdout_of("create_tenant", "acme", "--name", "Acme", "--max-connections", "5")
    output = stdout_of("create_tenant", "acme", "--max-connections", "7")
    assert "updated" in output
    assert Tenant.objects.count() == 1
    tenant = Tenant.objects.get(pk="acme")
    assert (tenant.name, tenant.max_connections) == ("Acme", 7), "unspecified options stay"
    stdout_of("create_tenant", "acme")
    assert Tenant.objects.get(pk="acme").max_connections == 7


def test_disable_and_enable() -> None:
    stdout_of("create_tenant", "acme")
    assert get_tenant_policy("acme").active is True
    assert "disabled" in stdout_of("create_tenant", "acme", "--disable")
    assert Tenant.objects.get(pk="acme").active is False
    assert get_tenant_policy("acme").active is False, "the cached policy is refreshed"
    assert "active" in stdout_of("create_tenant", "acme", "--enable")
    assert get_tenant_policy("acme").active is True


def test_create_disabled_tenant() -> None:
    stdout_of("create_tenant", "later", "--disable")
    assert Tenant.objects.get(pk="later").active is False


@pytest.mark.parametrize(
    "args",
    [
        ["bad slug"],
        ["a#b"],
        ["acme/x"],
        [""],
        ["acme", "--max-connections", "-1"],
        ["acme", "--max-connections", "many"],
        ["acme", "--disable", "--enable"],
    ],
)
def test_create_tenant_rejects_bad_input(args) -> None:
    with pytest.raises(CommandError):
        stdout_of("create_tenant", *args)
    assert Tenant.objects.count() == 0
