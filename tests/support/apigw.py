"""Helpers of the API Gateway tests: the JWT secret their tenant uses, and tokens."""

from __future__ import annotations

import time

import jwt

SECRET = "apigw-test-secret-with-at-least-32-bytes"


def token(user: str = "u1", tenant: str = "acme", **extra) -> str:
    claims = {"sub": user, "tenant_id": tenant, "exp": int(time.time()) + 600, **extra}
    return jwt.encode(claims, SECRET, algorithm="HS256")
