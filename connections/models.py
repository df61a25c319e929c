"""Tenants: the customers of a Streamer deployment (Django ORM; managed in the admin)."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models

from connections.webhook_config import (
    new_webhook_secret,
    validate_webhook_secret,
    validate_webhook_url,
)


class Tenant(models.Model):
    """A tenant owns users (token ``tenant_id`` claim), connections and requests."""

    id = models.SlugField(primary_key=True, max_length=64)
    name = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)
    max_connections = models.PositiveIntegerField(
        default=1000, help_text="Live WebSocket connections allowed at once; 0 means unlimited."
    )
    rate_limit_frames = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Frames per connection per window; empty uses the server default.",
    )
    rate_limit_window_s = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Rate limit window in seconds; empty uses the server default.",
    )
    # docs/protocol.md §5 (1.1): per-tenant overrides of the server defaults; empty uses them.
    max_connections_per_user = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Live connections one user may hold; empty uses the server default (20).",
    )
    max_active_requests = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Active (pending, processing, retrying) async requests of the whole tenant; "
        "empty uses the server default (1,000).",
    )
    max_active_requests_per_user = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Active async requests of one user; empty uses the server default (20).",
    )
    max_running = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Requests of this tenant one worker runs at once (its share of the worker's "
        "slots); empty uses the server default (half of each worker's slots).",
    )
    webhook_url = models.URLField(
        max_length=500,
        blank=True,
        validators=[validate_webhook_url],
        help_text="HTTPS endpoint that gets a signed POST when a request ends; empty: no "
        "webhooks. Plain http only to a loopback address with DJANGO_DEBUG on.",
    )
    webhook_secret = models.CharField(
        max_length=200,
        blank=True,
        validators=[validate_webhook_secret],
        help_text="Standard Webhooks secret (whsec_…) that signs the POSTs; left empty with "
        "an endpoint set, a new one is generated.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name or self.id

    def clean(self) -> None:
        """An endpoint without a secret gets a new secret (POSTs are always signed)."""
        super().clean()
        if self.webhook_url and not self.webhook_secret:
            self.webhook_secret = new_webhook_secret()


class ApiKey(models.Model):
    """A key for the publish API (``POST /api/v1/publish``), scoped to one tenant.

    Only a SHA-256 hash is stored: the key itself is shown once, when it is created.
    Keys are 32 random bytes, so a fast hash is enough (no password stretching needed).
    """

    PREFIX = "sk_"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    lookup = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.PREFIX}{self.lookup}… ({self.tenant_id})"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def issue(cls, tenant: Tenant, name: str = "") -> tuple[ApiKey, str]:
        """Create a key; returns the row and the secret (shown once, never stored)."""
        import secrets

        lookup = secrets.token_hex(6)
        secret = f"{cls.PREFIX}{lookup}{secrets.token_urlsafe(32)}"
        row = cls.objects.create(tenant=tenant, name=name, lookup=lookup, key_hash=_sha256(secret))
        return row, secret

    @classmethod
    def authenticate(cls, secret: str) -> ApiKey | None:
        """The active key matching ``secret``, or None."""
        import hmac

        if not secret.startswith(cls.PREFIX) or len(secret) < len(cls.PREFIX) + 12:
            return None
        lookup = secret[len(cls.PREFIX) : len(cls.PREFIX) + 12]
        row = cls.objects.select_related("tenant").filter(lookup=lookup, revoked_at=None).first()
        if row is None or not hmac.compare_digest(row.key_hash, _sha256(secret)):
            return None
        return row


def _sha256(value: str) -> str:
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()
