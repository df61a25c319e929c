"""Fixtures of the admin tests: DynamoDB in moto, users, tenants, live channels."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.test import Client

from connections.models import Tenant
from connections.tenants import forget_tenant
from storage import base
from storage.connection import ConnectionInfo, connection_store
from storage.requests.model import RequestKey, RequestRecord
from storage.requests.store import request_store

T0 = 1_700_000_000_000


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    """No cached counts/stats, no tenant policies and no channel messages between tests."""
    cache.clear()
    forget_tenant()
    async_to_sync(get_channel_layer().flush)()
    yield
    cache.clear()


@pytest.fixture
def ddb(moto_dynamodb: base.StoreConfig) -> base.StoreConfig:
    return moto_dynamodb


@pytest.fixture
def superuser(db: Any) -> User:
    return User.objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def staff(superuser: User) -> Client:
    """A logged-in superuser (every permission)."""
    client = Client()
    client.force_login(superuser)
    return client


def _user(name: str, *, is_staff: bool, perms: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(name, f"{name}@example.com", "pw", is_staff=is_staff)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


@pytest.fixture
def viewer(db: Any) -> Client:
    """Staff with only the tenant view permission: may look, may not act."""
    client = Client()
    client.force_login(_user("viewer", is_staff=True, perms=("view_tenant",)))
    return client


@pytest.fixture
def bare_staff(db: Any) -> Client:
    """Staff without any permission."""
    client = Client()
    client.force_login(_user("bare", is_staff=True))
    return client


@pytest.fixture
def non_staff(db: Any) -> Client:
    client = Client()
    client.force_login(_user("joe", is_staff=False, perms=("view_tenant", "change_tenant")))
    return client


@pytest.fixture
def csrf_staff(superuser: User) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    return client


@pytest.fixture
def tenant(db: Any) -> Tenant:
    return Tenant.objects.create(id="acme", name="Acme Inc", max_connections=3)


def new_channel() -> str:
    return async_to_sync(get_channel_layer().new_channel)()


def receive(channel: str, timeout: float = 2.0) -> dict[str, Any]:
    """The next message on ``channel`` (what a consumer of that socket would get)."""
    layer = get_channel_layer()

    async def _receive() -> dict[str, Any]:
        return await asyncio.wait_for(layer.receive(channel), timeout)

    return async_to_sync(_receive)()


def nothing_sent(channel: str) -> bool:
    return channel not in get_channel_layer().channels


@pytest.fixture
def connect(ddb: base.StoreConfig) -> Callable[..., ConnectionInfo]:
    """Register a connection whose socket is a fresh in-memory channel (its address)."""

    def _connect(
        connection_id: str, tenant_id: str = "acme", user_id: str = "alice", **fields: Any
    ) -> ConnectionInfo:
        fields.setdefault("address", new_channel())
        fields.setdefault("transport", "channels")
        return connection_store.save(
            ConnectionInfo(
                connection_id=connection_id, tenant_id=tenant_id, user_id=user_id, **fields
            )
        )

    return _connect


@pytest.fixture
def enqueue(ddb: base.StoreConfig) -> Callable[..., RequestRecord]:
    def _enqueue(
        request_id: str, tenant_id: str = "acme", user_id: str = "alice", **fields: Any
    ) -> RequestRecord:
        fields.setdefault("action", "report.run")
        fields.setdefault("payload", {"rows": 3})
        return request_store.enqueue(
            tenant_id=tenant_id, user_id=user_id, request_id=request_id, **fields
        )

    return _enqueue


def key(request_id: str, tenant_id: str = "acme", user_id: str = "alice") -> RequestKey:
    return RequestKey(tenant_id, user_id, request_id)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []
