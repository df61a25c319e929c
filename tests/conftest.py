"""Fixtures shared by every test tier.

* ``moto_dynamodb``: every registered table, in moto (unit tier).
* ``local_dynamodb``: every registered table, in a real embedded dynalite server
  (integration tier; one server per test session, a fresh table prefix per test).
* ``dynamodb``: parametrized over both, for store contract tests that must hold against
  moto *and* a real DynamoDB-compatible endpoint.

The fixtures of one kind of test live in ``tests/fixtures/`` (loaded below for every
test, each name meaning one thing): ``asgi`` (the application over moto and the
in-memory layer), ``worker`` (module-wide moto tables, fake sockets, API call counts),
``admin`` (users, permissions, connections and requests for the admin pages),
``apigw`` (the API Gateway tenant), ``live`` (stacks of real processes, started by
bench/stack.py), ``webhooks`` (a local webhook receiver), ``parallel`` (how
``pytest -n`` spreads the modules over worker processes) and ``summary`` (numbers
printed at the end of the run). Fixtures that
reset process state are not autouse: a module asks for them with
``pytestmark = pytest.mark.usefixtures(...)``.
Helpers that tests import live in ``tests/support/``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from moto import mock_aws

from storage import base, localserver, tables

pytest_plugins = [
    "pytester",
    "tests.fixtures.asgi",
    "tests.fixtures.worker",
    "tests.fixtures.summary",  # before the modules that import it
    "tests.fixtures.admin",
    "tests.fixtures.apigw",
    "tests.fixtures.live",
    "tests.fixtures.webhooks",
    "tests.fixtures.parallel",
]

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
_prefix_counter = itertools.count()


@pytest.fixture(autouse=True)
def _restore_store_config() -> Iterator[None]:
    saved = base.current_config()
    yield
    if base.current_config() != saved:  # rebuilding clients costs time; skip when unchanged
        base.configure(saved)


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    """Per-process caches (tenant policies, tenant connection counts, the hub's sockets)
    start empty."""
    from connections.hub import hub
    from connections.tenants import forget_tenant
    from streaming.session import tenant_counts
    from streaming.user_cap import forget_full_users

    forget_tenant()
    tenant_counts._counts.clear()
    forget_full_users()
    hub.reset()
    yield
    forget_tenant()
    tenant_counts._counts.clear()
    forget_full_users()
    hub.reset()


@pytest.fixture
def moto_dynamodb() -> Iterator[base.StoreConfig]:
    """All tables in moto; yields the active store configuration."""
    with mock_aws():
        config = base.StoreConfig(endpoint_url=None, region="us-east-1", table_prefix="test")
        base.configure(config)
        tables.create_all()
        yield config


@pytest.fixture(scope="session")
def dynalite_endpoint() -> Iterator[str]:
    """A real dynalite server for the whole session (in memory)."""
    port = localserver.free_port()
    proc = localserver.start_dynalite(port)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        localserver.wait_until_up(endpoint)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def local_dynamodb(dynalite_endpoint: str) -> Iterator[base.StoreConfig]:
    """All tables in the embedded server under a fresh prefix."""
    config = base.StoreConfig(
        endpoint_url=dynalite_endpoint,
        table_prefix=f"t{os.getpid()}x{next(_prefix_counter)}",
    )
    base.configure(config)
    tables.create_all()
    yield config


@pytest.fixture(params=["moto", pytest.param("dynalite", marks=pytest.mark.integration)])
def dynamodb(request: pytest.FixtureRequest) -> base.StoreConfig:
    """Store contract tests run against moto and against the embedded server."""
    fixture = "moto_dynamodb" if request.param == "moto" else "local_dynamodb"
    return request.getfixturevalue(fixture)
