"""Who is on the other end of a socket: the JWT rules of PROTOCOL.md §1.

Algorithms come from settings only, never from the token header. User, tenant and
permissions come only from the verified token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jwt
from django.conf import settings

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 16 * 1024


class AuthFailure(Exception):
    """The handshake is refused with ``close_code`` (4401/4403/4429/1011)."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


UNAUTHORIZED = 4401
FORBIDDEN_TENANT = 4403
TOO_MANY_CONNECTIONS = 4429
STORAGE_DOWN = 1011


@dataclass(frozen=True)
class Identity:
    """The verified caller."""

    tenant_id: str
    user_id: str
    permissions: frozenset[str]


def extract_token(query: Mapping[str, list[str]], headers: Mapping[str, str]) -> str | None:
    """The token from, in order: ``token`` query parameter, ``Authorization`` query
    parameter (``Bearer `` optional), ``Authorization: Bearer`` header."""
    for value in query.get("token", []):
        if value:
            return value
    for value in query.get("Authorization", []):
        if value:
            return value[7:] if value.startswith("Bearer ") else value
    header = headers.get("authorization", "")
    if header.startswith("Bearer ") and len(header) > 7:
        return header[7:]
    return None


def parse_query(query_string: bytes | str) -> dict[str, list[str]]:
    """Decode an ASGI query string."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    return parse_qs(query_string, keep_blank_values=False)


def asgi_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI header pairs as a lower-cased dict."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}


def _verification_key() -> str:
    return settings.STREAMER_JWT_PUBLIC_KEY or settings.STREAMER_JWT_SECRET


def verify_token(token: str | None) -> Identity:
    """Verify a JWT and return the identity it proves; AuthFailure(4401) otherwise."""
    if not token:
        raise AuthFailure(UNAUTHORIZED, "Authentication required")
    key = _verification_key()
    if not key or len(token) > MAX_TOKEN_BYTES:
        raise AuthFailure(UNAUTHORIZED, "Invalid token")
    options: dict[str, Any] = {"require": ["exp", "sub", "tenant_id"]}
    if not settings.STREAMER_JWT_AUDIENCE:
        # PROTOCOL.md §1: ``aud`` is checked only when configured (PyJWT would otherwise
        # refuse every token that carries one).
        options["verify_aud"] = False
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=list(settings.STREAMER_JWT_ALGORITHMS),
            issuer=settings.STREAMER_JWT_ISSUER,
            audience=settings.STREAMER_JWT_AUDIENCE,
            leeway=settings.STREAMER_JWT_LEEWAY_S,
            options=options,  # type: ignore[arg-type]
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthFailure(UNAUTHORIZED, "Token expired") from exc
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        log.info("token rejected: %s", type(exc).__name__)
        raise AuthFailure(UNAUTHORIZED, "Invalid token") from exc
    return _identity(claims)


def _identity(claims: dict[str, Any]) -> Identity:
    sub, tenant, permissions = (
        claims.get("sub"),
        claims.get("tenant_id"),
        claims.get("permissions", []),
    )
    if not isinstance(sub, str) or not sub or len(sub) > 256:
        raise AuthFailure(UNAUTHORIZED, "Invalid token")
    if not isinstance(tenant, str) or not tenant or len(tenant) > 64 or "#" in tenant:
        raise AuthFailure(UNAUTHORIZED, "Invalid token")
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise AuthFailure(UNAUTHORIZED, "Invalid token")
    return Identity(tenant_id=tenant, user_id=sub, permissions=frozenset(permissions))


def issue_token(
    tenant_id: str, user_id: str, permissions: Iterable[str] = (), ttl_s: int = 3600
) -> str:
    """Sign a development token with the configured HS* secret."""
    import time

    algorithm = next((a for a in settings.STREAMER_JWT_ALGORITHMS if a.startswith("HS")), None)
    if algorithm is None or not settings.STREAMER_JWT_SECRET:
        raise ValueError("issuing tokens needs an HS* algorithm and STREAMER_JWT_SECRET")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "tenant_id": tenant_id,
        "permissions": list(permissions),
        "iat": now,
        "exp": now + ttl_s,
    }
    if settings.STREAMER_JWT_ISSUER:
        claims["iss"] = settings.STREAMER_JWT_ISSUER
    if settings.STREAMER_JWT_AUDIENCE:
        claims["aud"] = settings.STREAMER_JWT_AUDIENCE
    return jwt.encode(claims, settings.STREAMER_JWT_SECRET, algorithm=algorithm)
