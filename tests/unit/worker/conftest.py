"""Fixtures of the worker / progress / manager / transport tests.

* ``channel_layer``: a fresh in-memory channel layer per test (autouse), installed as
  the ``default`` alias, so no queue is bound to a previous test's event loop and no
  message of another test is left in a channel.
* ``moto_tables``: every table in moto, created once per module (creating them costs
  about a second); ``store`` purges the live requests a previous test left behind so
  a worker never finds someone else's work.
* ``make_socket``: a :class:`~tests.unit.worker.helpers.FakeSocket`, a channel name the
  Channels transport delivers to; the test receives from it what a browser would see.
* ``api_calls``: counts botocore calls (no storage read where none is expected).
* ``tenant_db``: the Django database, autouse: a worker reads each tenant's share of
  its slots from the tenant's settings (streaming/fairness.py), from worker threads,
  so the database is the transactional one every thread sees.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import botocore.client
import pytest
from channels.layers import InMemoryChannelLayer, channel_layers
from moto import mock_aws

from connections.manager import manager
from connections.transports import transports
from storage import base, tables
from storage.requests.model import RequestModel
from storage.requests.store import RequestStore, request_store
from streaming.actions.registry import ActionRegistry
from tests.unit.worker.helpers import ApiCalls, FakeSocket

# --- channel layer, transports, manager cache --------------------------------------------


@pytest.fixture(autouse=True)
def channel_layer() -> Iterator[InMemoryChannelLayer]:
    layer = InMemoryChannelLayer(capacity=100_000, expiry=60)
    previous = channel_layers.set("default", layer)
    saved_transports = dict(transports._backends)
    manager._subscribers.clear()
    yield layer
    manager._subscribers.clear()
    transports._backends = saved_transports
    if previous is None:
        channel_layers.backends.pop("default", None)
    else:
        channel_layers.set("default", previous)


@pytest.fixture(autouse=True)
def tenant_db(transactional_db: None) -> None:
    """Tenant settings in the test database (none: every tenant has the defaults)."""


# --- storage -----------------------------------------------------------------------------


_moto_lock = threading.Lock()


@pytest.fixture(scope="module")
def moto_tables() -> Iterator[base.StoreConfig]:
    """Every table in moto, once per module.

    moto checks a ConditionExpression and applies the update in two steps that threads
    can interleave (seen here: two workers' conditional claims of one request both
    succeeded), whereas DynamoDB applies each item write atomically. API calls are
    therefore serialized while moto is in use, which restores that guarantee.
    """
    previous = base.current_config()
    original = botocore.client.BaseClient._make_api_call

    def atomic(self: Any, operation_name: str, api_params: Any) -> Any:
        with _moto_lock:
            return original(self, operation_name, api_params)

    with mock_aws():
        botocore.client.BaseClient._make_api_call = atomic  # type: ignore[method-assign]
        try:
            config = base.StoreConfig(endpoint_url=None, region="us-east-1", table_prefix="wk")
            base.configure(config)
            tables.create_all()
            yield config
        finally:
            botocore.client.BaseClient._make_api_call = original  # type: ignore[method-assign]
    base.configure(previous)


def purge_live_requests() -> None:
    """Delete every request still in the ``due`` index (work left by another test)."""
    with RequestModel.batch_write() as writer:
        for item in RequestModel.scan(RequestModel.due_shard.exists()):
            writer.delete(item)


@pytest.fixture
def store(moto_tables: base.StoreConfig) -> RequestStore:
    if base.current_config() != moto_tables:
        base.configure(moto_tables)
    purge_live_requests()
    return request_store


@pytest.fixture
def api_calls(monkeypatch: pytest.MonkeyPatch) -> ApiCalls:
    """Counts every botocore API call (DynamoDB reads and writes)."""
    recorder = ApiCalls()
    original = botocore.client.BaseClient._make_api_call

    def counting(self: Any, operation_name: str, api_params: Any) -> Any:
        recorder.add(operation_name)
        return original(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    return recorder


# --- actions -----------------------------------------------------------------------------


@pytest.fixture
def actions() -> ActionRegistry:
    return ActionRegistry()


# --- the fake socket ---


@pytest.fixture
def make_socket(channel_layer: InMemoryChannelLayer) -> Callable[..., Awaitable[FakeSocket]]:
    async def make(user_id: str = "alice") -> FakeSocket:
        channel = await channel_layer.new_channel("socket.")
        return FakeSocket(channel_layer, channel, user_id)

    return make
