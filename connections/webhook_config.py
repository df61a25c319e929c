"""What a tenant's webhook endpoint and secret may be (docs/jobs.md, Webhooks).

An endpoint is an ``https://`` URL; plain ``http://`` is accepted only for a loopback
host (``localhost``, ``127.0.0.0/8``, ``::1``) and only while ``DJANGO_DEBUG`` is on, so
a local receiver can be tried without a certificate and production never sends event
data in clear text. A secret is a Standard Webhooks secret: ``whsec_`` + the base64 of
24 to 64 random bytes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
_SECRET_BYTES = (24, 64)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (v4 and v6)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_webhook_url(value: str) -> None:
    """Refuse anything but an https URL (or http to loopback with debug on)."""
    URLValidator(schemes=["http", "https"], message="Enter a valid http(s) URL.")(value)
    parts = urlsplit(value)
    if parts.username or parts.password:
        raise ValidationError("The webhook URL must not carry a user name or password.")
    if parts.scheme == "https":
        return
    if not is_loopback_host(parts.hostname or ""):
        raise ValidationError("The webhook URL must use https:// (plain http only to loopback).")
    if not settings.DEBUG:
        raise ValidationError(
            "Plain http:// webhook URLs are allowed only with DJANGO_DEBUG on; use https://."
        )


def validate_webhook_secret(value: str) -> None:
    """Refuse a secret that is not ``whsec_`` + base64 of 24–64 bytes."""
    message = "The webhook secret must be whsec_ followed by the base64 of 24 to 64 bytes."
    if not value.startswith(SECRET_PREFIX):
        raise ValidationError(message)
    try:
        raw = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(message) from None
    if not _SECRET_BYTES[0] <= len(raw) <= _SECRET_BYTES[1]:
        raise ValidationError(message)


def new_webhook_secret() -> str:
    """A fresh secret (32 random bytes), for a tenant given an endpoint but no secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
