"""Argument checks shared by every store: each raises :class:`ValidationError` with a
message that names the argument, before any network call.

One limit per kind of id, whichever store is asked: a tenant id is at most
:data:`MAX_TENANT_ID` characters (the ``Tenant`` model's id is a slug of that length).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson

from storage.errors import ValidationError

MAX_TENANT_ID = 64
MAX_USER_ID = 256
MAX_CONNECTION_ID = 256
MAX_WORKER_ID = 256


def require_text(name: str, value: Any, max_length: int = 1024) -> str:
    """A non-empty string of at most ``max_length`` characters (an id, an address)."""
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise ValidationError(f"{name} must be a non-empty string of at most {max_length} chars")
    return value


def optional_text(name: str, value: Any, max_length: int = 1024) -> str:
    """A string of at most ``max_length`` characters, possibly empty."""
    if not isinstance(value, str) or len(value) > max_length:
        raise ValidationError(f"{name} must be a string of at most {max_length} chars")
    return value


def require_tenant(tenant_id: Any) -> str:
    """A tenant id: at most :data:`MAX_TENANT_ID` characters and no ``#``, so that an
    owner key ``tenant#user`` splits unambiguously at its first ``#``."""
    require_text("tenant_id", tenant_id, MAX_TENANT_ID)
    if "#" in tenant_id:
        raise ValidationError("tenant_id must not contain '#'")
    return str(tenant_id)


def require_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An integer (not a bool) in ``minimum..maximum``: counts, limits, epoch ms."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"{name} must be an integer >= {minimum}")
    if maximum is not None and value > maximum:
        raise ValidationError(f"{name} must be at most {maximum}")
    return value


def require_choice(name: str, value: Any, choices: Collection[str]) -> str:
    """One of ``choices`` (a transport name, a status)."""
    if value not in choices:
        raise ValidationError(f"{name} must be one of {sorted(choices)}")
    return str(value)


def require_strings(name: str, values: Any) -> tuple[str, ...]:
    """A list or tuple of non-empty strings (permissions)."""
    if not isinstance(values, tuple | list) or not all(isinstance(v, str) and v for v in values):
        raise ValidationError(f"{name} must be a sequence of non-empty strings")
    return tuple(values)


def require_json(name: str, value: Any, max_bytes: int) -> None:
    """A JSON-serialisable value of at most ``max_bytes`` once encoded (items must stay
    under DynamoDB's 400 KB)."""
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:
        raise ValidationError(f"{name} must be JSON-serializable") from exc
    if len(encoded) > max_bytes:
        raise ValidationError(f"{name} is larger than {max_bytes} bytes once encoded")
