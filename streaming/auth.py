"""Who is on the other end of a socket: the JWT rules of docs/protocol.md §1.

Algorithms come from settings only, never from the token header. User, tenant and
permissions come only from the verified token.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
#: The reason of a 4401 for a token past its ``exp``.
TOKEN_EXPIRED = "Token expired"  # noqa: S105 - a close reason, not a secret


@dataclass(frozen=True)
class Identity:
    """The verified caller."""

    tenant_id: str
    user_id: str
    permissions: frozenset[str]
    #: The token's ``exp`` in epoch milliseconds (None: not known, e.g. a session
    #: rebuilt from an old record). Not part of who the caller is, so not compared.
    expires_at: int | None = field(default=None, compare=False)

    def expired(self, now_ms: int | None = None) -> bool:
        """Whether the token behind this identity has expired (with the clock-skew
        leeway the handshake also grants), so its socket must close with 4401."""
        if self.expires_at is None:
            return False
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return now >= self.expires_at + settings.STREAMER_JWT_LEEWAY_S * 1000

    def seconds_left(self) -> float | None:
        """Seconds until :meth:`expired` turns true (None when it never does)."""
        if self.expires_at is None:
            return None
        deadline = self.expires_at / 1000 + settings.STREAMER_JWT_LEEWAY_S
        return max(0.0, deadline - time.time())


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


@functools.lru_cache(maxsize=16)
def _prepared(key: str, algorithm: str) -> Any:
    return jwt.get_algorithm_by_name(algorithm).prepare_key(key)


def _parsed_key(token: str, key: str) -> Any:
    """``key`` prepared for the token's algorithm, parsed once per key and algorithm:
    PyJWT parses a PEM key on every decode (RS256: 425 µs a decode, 185 µs with the
    parsed key, measured). The same ``prepare_key`` PyJWT would call, so the same keys
    are refused; an algorithm outside the settings gets the raw key (decode refuses it)."""
    algorithm = jwt.get_unverified_header(token).get("alg")
    if algorithm not in settings.STREAMER_JWT_ALGORITHMS:
        return key
    return _prepared(key, algorithm)


def verify_token(token: str | None) -> Identity:
    """Verify a JWT and return the identity it proves; AuthFailure(4401) otherwise."""
    if not token:
        raise AuthFailure(UNAUTHORIZED, "Authentication required")
    key = _verification_key()
    if not key or len(token) > MAX_TOKEN_BYTES:
        raise AuthFailure(UNAUTHORIZED, "Invalid token")
    options: dict[str, Any] = {"require": ["exp", "sub", "tenant_id"]}
    if not settings.STREAMER_JWT_AUDIENCE:
        # docs/protocol.md §1: ``aud`` is checked only when configured (PyJWT would otherwise
        # refuse every token that carries one).
        options["verify_aud"] = False
    try:
        claims = jwt.decode(
            token,
            _parsed_key(token, key),
            algorithms=list(settings.STREAMER_JWT_ALGORITHMS),
            issuer=settings.STREAMER_JWT_ISSUER,
            audience=settings.STREAMER_JWT_AUDIENCE,
            leeway=settings.STREAMER_JWT_LEEWAY_S,
            options=options,  # type: ignore[arg-type]
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthFailure(UNAUTHORIZED, TOKEN_EXPIRED) from exc
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        # PyJWTError, not only InvalidTokenError: a key that does not suit the token's
        # algorithm (InvalidKeyError) must refuse the token, never crash the connect.
        log.info("token rejected: %s", type(exc).__name__)
        raise AuthFailure(UNAUTHORIZED, "Invalid token") from exc
    _check_lifetime(claims)
    return _identity(claims)


def _check_lifetime(claims: dict[str, Any]) -> None:
    """docs/protocol.md §5: ``exp`` at most STREAMER_MAX_TOKEN_LIFETIME_S after ``iat`` and
    after now, so a stolen token cannot be used for decades."""
    limit = settings.STREAMER_MAX_TOKEN_LIFETIME_S
    exp = claims["exp"]  # PyJWT checked that it is a number
    iat = claims.get("iat")
    too_long = exp - time.time() > limit + settings.STREAMER_JWT_LEEWAY_S
    if isinstance(iat, int | float) and not isinstance(iat, bool):
        too_long = too_long or exp - iat > limit
    if too_long:
        log.info("token rejected: lifetime above %s s", limit)
        raise AuthFailure(UNAUTHORIZED, "Token lifetime too long")


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
    return Identity(
        tenant_id=tenant,
        user_id=sub,
        permissions=frozenset(permissions),
        expires_at=int(claims["exp"] * 1000),
    )


def issue_token(
    tenant_id: str, user_id: str, permissions: Iterable[str] = (), ttl_s: int = 3600
) -> str:
    """Sign a development token with the configured HS* secret."""
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
