"""``Authorization: Bearer <secret>`` for the HTTP endpoints (publish API, /metrics)."""

from __future__ import annotations

import hmac

from django.http import HttpRequest

PREFIX = "Bearer "


def bearer_token(request: HttpRequest) -> str:
    """The secret of an ``Authorization: Bearer`` header; empty when there is none."""
    header = request.headers.get("Authorization", "")
    return header[len(PREFIX) :].strip() if header.startswith(PREFIX) else ""


def same_secret(given: str, expected: str) -> bool:
    """Compare in constant time, so response timing tells nothing about the secret."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
