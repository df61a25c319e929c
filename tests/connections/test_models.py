"""Tenant and ApiKey (connections/models.py)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("asgi_settings")


@pytest.mark.django_db
def test_tenant_str() -> None:
    from connections.models import Tenant

    assert str(Tenant(id="acme", name="Acme Inc")) == "Acme Inc"
    assert str(Tenant(id="acme")) == "acme"


@pytest.mark.django_db
def test_api_keys() -> None:
    from django.utils import timezone

    from connections.models import ApiKey, Tenant

    tenant = Tenant.objects.create(id="acme")
    row, secret = ApiKey.issue(tenant, "ci")
    assert secret.startswith(ApiKey.PREFIX) and row.key_hash not in secret
    assert row.active and "acme" in str(row) and secret not in str(row)
    assert ApiKey.authenticate(secret) == row
    for wrong in ("", "sk_short", "pk_" + secret[3:], secret[:-1] + "x", secret + "x"):
        assert ApiKey.authenticate(wrong) is None
    row.revoked_at = timezone.now()
    row.save()
    assert not row.active
    assert ApiKey.authenticate(secret) is None
