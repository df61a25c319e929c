"""Fixtures of the real-time tier: the ASGI application over moto and the in-memory
channel layer, with tenants in the Django test database.

Creating the moto tables costs about a second, so they are created once per package
and emptied before every test that asks for ``ddb``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from channels.layers import channel_layers
from moto import mock_aws

import streaming.pipeline
import streaming.session
from connections import tenants as tenant_cache
from connections.manager import manager
from storage import base, tables

from .helpers import SECRET

# Each model's PynamoDB connection (with its botocore client, ~0.3 s to build): the
# autouse fixture of tests/conftest.py re-configures the store after every test, which
# drops them; the configuration is the same, so they are put back.
_CLIENTS: dict[type, object] = {}


@pytest.fixture(scope="package")
def _moto_tables() -> Iterator[base.StoreConfig]:
    with mock_aws():
        config = base.StoreConfig(
            endpoint_url=None, region="us-east-1", table_prefix="rt", max_retry_attempts=0
        )
        base.configure(config)
        tables.create_all()
        for model in base.registered_models():
            _CLIENTS[model] = model._get_connection()
        yield config
        _CLIENTS.clear()


def _empty_tables() -> None:
    for model in base.registered_models():
        with model.batch_write() as writer:
            for item in model.scan():
                writer.delete(item)


@pytest.fixture
def ddb(_moto_tables: base.StoreConfig) -> base.StoreConfig:
    """Every table in moto, empty."""
    base.configure(_moto_tables)
    for model, connection in _CLIENTS.items():
        model._connection = connection
    _empty_tables()
    return _moto_tables


UNREACHABLE = base.StoreConfig(
    endpoint_url="http://127.0.0.1:9",
    table_prefix="nowhere",
    connect_timeout_s=1,
    read_timeout_s=1,
    max_retry_attempts=0,
)
_DOWN_CLIENTS: dict[type, object] = {}


def _storage_down() -> None:
    base.configure(UNREACHABLE)
    for model in base.registered_models():
        if model in _DOWN_CLIENTS:
            model._connection = _DOWN_CLIENTS[model]
        else:
            _DOWN_CLIENTS[model] = model._get_connection()


@pytest.fixture
def unreachable_storage() -> Callable[[], None]:
    """Call it to point the store at an endpoint that refuses connections; the autouse
    fixture of tests/conftest.py restores the configuration after the test."""
    return _storage_down


@pytest.fixture(autouse=True)
def _realtime_settings(settings) -> Iterator[None]:
    """Known JWT settings, a fresh in-memory layer, pipeline and caches per test."""
    settings.STREAMER_JWT_SECRET = SECRET
    settings.STREAMER_JWT_PUBLIC_KEY = ""
    settings.STREAMER_JWT_ALGORITHMS = ["HS256"]
    settings.STREAMER_JWT_ISSUER = None
    settings.STREAMER_JWT_AUDIENCE = None
    settings.STREAMER_IDLE_TIMEOUT_S = 600
    settings.STREAMER_MAX_FRAME_BYTES = 128 * 1024
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 1000, "expiry": 60},
        }
    }
    _reset_process_state()
    yield
    _reset_process_state()


def _reset_process_state() -> None:
    """Forget what the process caches between connections (layers, pipeline, tenant
    policies and connection counts, subscriber lists)."""
    channel_layers.backends = {}
    streaming.pipeline._pipeline = None
    manager._subscribers.clear()
    tenant_cache.forget_tenant()
    counts = getattr(streaming.session, "tenant_counts", None)
    if counts is not None:
        counts._counts.clear()


@pytest.fixture
def tenants(transactional_db) -> dict[str, object]:
    """acme and globex (active), off (disabled), tiny (1 connection), slow (3 frames
    per 10 s) and open (no connection limit)."""
    from connections.models import Tenant

    made = {
        "acme": Tenant.objects.create(id="acme", name="Acme"),
        "globex": Tenant.objects.create(id="globex", name="Globex"),
        "off": Tenant.objects.create(id="off", active=False),
        "tiny": Tenant.objects.create(id="tiny", max_connections=1),
        "slow": Tenant.objects.create(id="slow", rate_limit_frames=3, rate_limit_window_s=10),
        "open": Tenant.objects.create(id="open", max_connections=0),
    }
    tenant_cache.forget_tenant()
    return made


@pytest.fixture
def live(ddb: base.StoreConfig, tenants: dict[str, object]) -> base.StoreConfig:
    """What a WebSocket test needs: tables and tenants."""
    return ddb
