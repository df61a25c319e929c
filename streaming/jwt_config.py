"""The JWT configuration, checked once at start-up instead of at every connect.

PyJWT takes one key for every accepted algorithm: with HS256 and RS256 both accepted,
half of the tokens meet a key of the wrong kind and verification raised
``InvalidKeyError`` at connect time. Such configurations are refused when the server
starts (:func:`check_jwt_config`, called by ``streaming.asgi`` and registered as a
Django system check), with a message saying what to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import PyJWTError


def family(algorithm: str) -> str:
    """``"hmac"`` for HS*, ``"public"`` for RS*/PS*/ES*/EdDSA: the kind of key it needs."""
    return "hmac" if algorithm.startswith("HS") else "public"


def config_errors(
    algorithms: Sequence[str], secret: str, public_key: str
) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a JWT configuration; errors make the server refuse to start."""
    errors: list[str] = []
    warnings: list[str] = []
    known = get_default_algorithms()
    if not algorithms:
        errors.append("STREAMER_JWT_ALGORITHMS is empty: list at least one algorithm")
    unknown = [a for a in algorithms if a not in known or a == "none"]
    if unknown:
        errors.append(f"STREAMER_JWT_ALGORITHMS has unsupported algorithms: {', '.join(unknown)}")
    usable = [a for a in algorithms if a not in unknown]
    families = {family(a) for a in usable}
    if len(families) > 1:
        errors.append(
            "STREAMER_JWT_ALGORITHMS mixes HMAC (HS*) and public-key algorithms "
            f"({', '.join(usable)}); one key verifies every token, so accept one family only"
        )
    elif families == {"public"}:
        if not public_key:
            errors.append(f"{usable[0]} needs STREAMER_JWT_PUBLIC_KEY (a PEM public key)")
        else:
            errors.extend(_key_errors(usable, public_key, known, "STREAMER_JWT_PUBLIC_KEY"))
    elif families == {"hmac"}:
        if public_key:
            errors.append(
                "STREAMER_JWT_PUBLIC_KEY is set but STREAMER_JWT_ALGORITHMS only has HS* "
                "algorithms: set RS256/ES256 there, or unset the public key"
            )
        elif not secret:
            warnings.append("STREAMER_JWT_SECRET is not set: every token will be refused (4401)")
    return errors, warnings


def _key_errors(algorithms: Sequence[str], key: str, known: dict[str, Any], name: str) -> list[str]:
    errors = []
    for algorithm in algorithms:
        try:
            known[algorithm].prepare_key(key)
        except (PyJWTError, ValueError, TypeError):
            errors.append(f"{name} is not a valid key for {algorithm}")
    return errors


def _current() -> tuple[list[str], list[str]]:
    return config_errors(
        list(settings.STREAMER_JWT_ALGORITHMS),
        settings.STREAMER_JWT_SECRET,
        settings.STREAMER_JWT_PUBLIC_KEY,
    )


def check_jwt_config() -> None:
    """Refuse to start (ImproperlyConfigured) with a JWT configuration that cannot work."""
    errors, _ = _current()
    if errors:
        raise ImproperlyConfigured("; ".join(errors))


@checks.register(checks.Tags.security)
def jwt_system_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The same rules as a Django system check (``manage.py check``, ``serve``, ``migrate``)."""
    errors, warnings = _current()
    return [checks.Error(m, id="streamer.E101") for m in errors] + [
        checks.Warning(m, id="streamer.W101") for m in warnings
    ]
