from __future__ import annotations

import pytest

from connections.tenants import forget_tenant

SECRET = "apigw-test-secret-with-at-least-32-bytes"


@pytest.fixture
def tenant(db, settings):
    """An active 'acme' tenant, a JWT secret, and the in-memory channel layer."""
    from connections.models import Tenant

    settings.STREAMER_JWT_SECRET = SECRET
    settings.STREAMER_JWT_ALGORITHMS = ["HS256"]
    settings.STREAMER_APIGW_SHARED_SECRET = "shared-secret"
    forget_tenant()
    tenant = Tenant.objects.create(id="acme", name="Acme", max_connections=0)
    yield tenant
    forget_tenant()


def token(user: str = "u1", tenant: str = "acme", **extra) -> str:
    import time

    import jwt

    claims = {"sub": user, "tenant_id": tenant, "exp": int(time.time()) + 600, **extra}
    return jwt.encode(claims, SECRET, algorithm="HS256")
