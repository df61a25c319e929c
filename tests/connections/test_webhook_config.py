"""Which webhook endpoints and secrets a tenant may have, in the model (admin form) and in
``create_tenant``."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from standardwebhooks import Webhook

from connections.models import Tenant
from connections.webhook_config import (
    new_webhook_secret,
    validate_webhook_secret,
    validate_webhook_url,
)

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, the spec's example length

URLS = [
    # (url, debug, accepted, why)
    ("https://hooks.example.com/streamer", False, True, ""),
    ("https://hooks.example.com:8443/x?y=1", False, True, ""),
    ("https://127.0.0.1/hooks", False, True, ""),
    ("http://127.0.0.1:9000/hooks", True, True, ""),
    ("http://localhost:9000/hooks", True, True, ""),
    ("http://[::1]:9000/hooks", True, True, ""),
    ("http://127.0.0.1:9000/hooks", False, False, "only with DJANGO_DEBUG on"),
    ("http://hooks.example.com/x", True, False, "must use https://"),
    ("http://10.0.0.5/x", True, False, "must use https://"),
    ("ftp://hooks.example.com/x", True, False, "valid http(s) URL"),
    ("hooks.example.com/x", True, False, "valid http(s) URL"),
    ("https://user:pw@hooks.example.com/x", False, False, "user name or password"),
    ("", False, False, "valid http(s) URL"),
]


@pytest.mark.parametrize(("url", "debug", "accepted", "why"), URLS)
def test_webhook_urls(url: str, debug: bool, accepted: bool, why: str) -> None:
    with override_settings(DEBUG=debug):
        if accepted:
            validate_webhook_url(url)
        else:
            with pytest.raises(ValidationError) as info:
                validate_webhook_url(url)
            assert why in " ".join(info.value.messages)


@pytest.mark.parametrize(
    ("secret", "accepted"),
    [
        (SECRET, True),
        pytest.param(new_webhook_secret(), True, id="generated"),  # same id in every xdist worker
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", False),  # no prefix
        ("whsec_" + "A" * 8, False),  # 6 bytes
        ("whsec_not base64!", False),
        ("whsec_" + "A" * 100, False),  # 75 bytes
    ],
)
def test_webhook_secrets(secret: str, accepted: bool) -> None:
    if accepted:
        validate_webhook_secret(secret)
        Webhook(secret)  # and the standardwebhooks package takes it
    else:
        with pytest.raises(ValidationError, match="whsec_ followed by the base64"):
            validate_webhook_secret(secret)


@pytest.mark.django_db
def test_the_admin_form_validation_generates_a_secret_for_a_new_endpoint() -> None:
    tenant = Tenant(id="acme", webhook_url="https://hooks.example.com/x")
    tenant.full_clean()
    validate_webhook_secret(tenant.webhook_secret)
    kept = Tenant(id="acme2", webhook_url="https://hooks.example.com/x", webhook_secret=SECRET)
    kept.full_clean()
    assert kept.webhook_secret == SECRET


def create_tenant(*args: str) -> str:
    out = StringIO()
    call_command("create_tenant", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "debug", "error"),
    [
        (["--webhook-url", "http://hooks.example.com/x"], True, "must use https://"),
        (["--webhook-url", "http://127.0.0.1:9/x"], False, "only with DJANGO_DEBUG on"),
        (["--webhook-url", "https://h.example.com", "--webhook-secret", "nope"], False, "whsec_"),
    ],
)
def test_create_tenant_refuses_bad_webhook_settings_and_keeps_the_tenant(
    args: list[str], debug: bool, error: str
) -> None:
    create_tenant("acme", "--webhook-url", "https://old.example.com/x", "--webhook-secret", SECRET)
    with override_settings(DEBUG=debug), pytest.raises(CommandError, match=error):
        create_tenant("acme", *args)
    tenant = Tenant.objects.get(id="acme")
    assert (tenant.webhook_url, tenant.webhook_secret) == ("https://old.example.com/x", SECRET)


@pytest.mark.django_db
def test_create_tenant_sets_generates_and_removes_the_webhook() -> None:
    out = create_tenant("acme", "--webhook-url", "https://hooks.example.com/x")
    tenant = Tenant.objects.get(id="acme")
    assert "webhook_url=https://hooks.example.com/x" in out
    assert out.strip().splitlines()[-1] == tenant.webhook_secret  # printed once, last line
    validate_webhook_secret(tenant.webhook_secret)
    out = create_tenant("acme", "--webhook-secret", SECRET)
    assert SECRET not in out
    assert Tenant.objects.get(id="acme").webhook_secret == SECRET
    create_tenant("acme", "--webhook-url", "")
    tenant = Tenant.objects.get(id="acme")
    assert (tenant.webhook_url, tenant.webhook_secret) == ("", "")
