"""Management commands: create_tenant and issue_token."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from connections.models import Tenant
from connections.tenants import get_tenant_policy
from streaming.auth import Identity, verify_token

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("asgi_settings")]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_tenant_creates_with_defaults() -> None:
    output = run("create_tenant", "acme")
    tenant = Tenant.objects.get(pk="acme")
    assert tenant.name == "acme" and tenant.active is True
    assert tenant.max_connections == 1000
    assert "created" in output and "acme" in output


def test_create_tenant_with_options() -> None:
    output = run("create_tenant", "acme", "--name", "Acme Inc", "--max-connections", "0")
    tenant = Tenant.objects.get(pk="acme")
    assert (tenant.name, tenant.max_connections) == ("Acme Inc", 0)
    assert "unlimited" in output


def test_create_tenant_is_idempotent_update() -> None:
    run("create_tenant", "acme", "--name", "Acme", "--max-connections", "5")
    output = run("create_tenant", "acme", "--max-connections", "7")
    assert "updated" in output
    assert Tenant.objects.count() == 1
    tenant = Tenant.objects.get(pk="acme")
    assert (tenant.name, tenant.max_connections) == ("Acme", 7), "unspecified options stay"
    run("create_tenant", "acme")
    assert Tenant.objects.get(pk="acme").max_connections == 7


def test_disable_and_enable() -> None:
    run("create_tenant", "acme")
    assert get_tenant_policy("acme").active is True
    assert "disabled" in run("create_tenant", "acme", "--disable")
    assert Tenant.objects.get(pk="acme").active is False
    assert get_tenant_policy("acme").active is False, "the cached policy is refreshed"
    assert "active" in run("create_tenant", "acme", "--enable")
    assert get_tenant_policy("acme").active is True


def test_create_disabled_tenant() -> None:
    run("create_tenant", "later", "--disable")
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
        run("create_tenant", *args)
    assert Tenant.objects.count() == 0


def test_issue_token_verifies() -> None:
    token = run(
        "issue_token",
        "--tenant",
        "acme",
        "--user",
        "alice",
        "--permissions",
        "a, b,,",
        "--ttl",
        "60",
    ).strip()
    assert verify_token(token) == Identity("acme", "alice", frozenset({"a", "b"}))


@pytest.mark.parametrize("ttl", ["0", "-5", "soon"])
def test_issue_token_bad_ttl(ttl) -> None:
    with pytest.raises(CommandError):
        run("issue_token", "--tenant", "acme", "--user", "alice", "--ttl", ttl)


def test_issue_token_requires_tenant_and_user() -> None:
    with pytest.raises(CommandError):
        run("issue_token", "--tenant", "acme")


def test_issue_token_without_secret(settings) -> None:
    settings.STREAMER_JWT_SECRET = ""
    with pytest.raises(CommandError) as info:
        run("issue_token", "--tenant", "acme", "--user", "alice")
    assert "STREAMER_JWT_SECRET" in str(info.value)
