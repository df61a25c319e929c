"""Short faults inside one process (moto, the in-memory channel layer), where timing can
be controlled exactly: what the process-level fault tests can only hit by luck.

* A storage blip inside a handler (DynamoDB throttling past botocore's retries, a
  dropped connection) is retried like any transient failure; it never turns a request
  into a permanent INTERNAL_ERROR.
* A channel layer that is down (Redis) makes a send fail, it does not raise through
  fan-outs, cancels or completions.
* Under daphne the 1011 close of docs/protocol.md §1 is a clean close frame.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer, channel_layers
from moto import mock_aws

from connections.manager import ConnectionManager, Target, manager
from connections.tenants import TenantPolicy
from storage import base, tables
from storage.errors import StorageUnavailable
from storage.requests.model import RequestKey, RequestStatus
from storage.requests.store import request_store
from streaming.actions.registry import ActionRegistry, action
from streaming.auth import Identity
from streaming.pipeline import Pipeline
from streaming.ratelimit import TokenBucket
from streaming.session import Session
from streaming.worker import Worker
from tests.support.worker import TENANT, FakeSocket, check_stream, running, submit


@pytest.fixture(scope="module")
def moto_tables() -> Iterator[base.StoreConfig]:
    previous = base.current_config()
    with mock_aws():
        config = base.StoreConfig(endpoint_url=None, region="us-east-1", table_prefix="rel")
        base.configure(config)
        tables.create_all()
        yield config
    base.configure(previous)


@pytest.fixture
def store(moto_tables: base.StoreConfig) -> base.StoreConfig:
    if base.current_config() != moto_tables:
        base.configure(moto_tables)
    return moto_tables


@pytest.fixture
def layer() -> Iterator[InMemoryChannelLayer]:
    fresh = InMemoryChannelLayer(capacity=10_000, expiry=60)
    previous = channel_layers.set("default", fresh)
    manager._subscribers.clear()
    yield fresh
    manager._subscribers.clear()
    if previous is None:
        channel_layers.backends.pop("default", None)
    else:
        channel_layers.set("default", previous)


async def new_socket(layer: InMemoryChannelLayer, user: str = "alice") -> FakeSocket:
    return FakeSocket(layer, await layer.new_channel("socket."), user)


def make_worker(actions: ActionRegistry) -> Worker:
    return Worker(
        actions=actions,
        concurrency=2,
        lease_s=30,
        poll_interval_s=0.05,
        shards=1,
        grace_s=2,
        retry_base_s=0.01,
    )


# The worker reads each tenant's share of its slots from the tenant settings (SQL).
@pytest.mark.django_db(transaction=True)
async def test_a_storage_blip_inside_a_handler_is_retried_not_failed(
    store: base.StoreConfig, layer: InMemoryChannelLayer
) -> None:
    actions = ActionRegistry()
    attempts: list[int] = []

    @action("t.reads", mode="async", registry=actions, max_attempts=3)
    async def reads(job: Any, payload: dict[str, Any]) -> dict[str, int]:
        attempts.append(job.attempt)
        job.report(40, "read a page")
        if job.attempt == 1:
            # what request_store raises when DynamoDB throttles past botocore's retries
            raise StorageUnavailable("storage unavailable during list_by_user")
        return {"attempt": job.attempt}

    sock = await new_socket(layer)
    async with running(make_worker(actions)):
        record = await submit(sock, "t.reads", shards=1, max_attempts=3)
        await sock.until_terminal(record.request_id)
        await sock.drain()
    terminal = check_stream(sock.about(record.request_id))
    assert terminal["type"] == "complete", terminal
    assert attempts == [1, 2]
    final = await asyncio.to_thread(request_store.get, record.key)
    assert (final.status, final.attempts) == (RequestStatus.COMPLETED, 2)


# The worker reads each tenant's share of its slots from the tenant settings (SQL).
@pytest.mark.django_db(transaction=True)
async def test_storage_down_for_every_attempt_fails_as_processing_failed(
    store: base.StoreConfig, layer: InMemoryChannelLayer
) -> None:
    actions = ActionRegistry()

    @action("t.down", mode="async", registry=actions, max_attempts=2)
    async def down(job: Any, payload: dict[str, Any]) -> None:
        raise StorageUnavailable("storage unavailable during get")

    sock = await new_socket(layer)
    async with running(make_worker(actions)):
        record = await submit(sock, "t.down", shards=1, max_attempts=2)
        await sock.until_terminal(record.request_id)
        await sock.drain()
    terminal = check_stream(sock.about(record.request_id))
    assert terminal["error"]["code"] == "PROCESSING_FAILED", terminal
    final = await asyncio.to_thread(request_store.get, record.key)
    assert (final.status, final.attempts) == (RequestStatus.FAILED, 2)


class DownLayer(InMemoryChannelLayer):
    """A channel layer whose backend is unreachable (what channels_redis raises)."""

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")


async def test_a_channel_layer_outage_is_a_failed_send_not_a_crash(
    store: base.StoreConfig, layer: InMemoryChannelLayer
) -> None:
    channel_layers.set("default", DownLayer())
    targets = [Target(f"c{i}", "channels", f"specific.x!{i}") for i in range(3)]
    report = await ConnectionManager().broadcast(targets, {"type": "pong"})
    assert (report.delivered, sorted(report.failed)) == (0, ["c0", "c1", "c2"])

    # A cancel is written, answered and reported even though nobody can be told.
    owner = f"user-{uuid.uuid4().hex[:6]}"
    record = await asyncio.to_thread(
        request_store.enqueue,
        tenant_id=TENANT,
        user_id=owner,
        request_id="to-cancel",
        action="generate_report",
        payload={},
        origin_transport="channels",
        origin_address="specific.x!origin",
        connection_id="c-origin",
        shards=1,
    )
    session = Session(
        identity=Identity(TENANT, owner, frozenset()),
        connection_id="c-origin",
        transport="channels",
        address="specific.x!origin",
        limiter=TokenBucket(100, 10),
        policy=TenantPolicy(TENANT, True, 0, 100, 10),
    )
    [answer] = await Pipeline().handle(
        session, '{"action": "request.cancel", "id": "x", "payload": {"request_id": "to-cancel"}}'
    )
    assert answer["type"] == "response", answer
    assert answer["data"]["status"] == "CANCELLED"
    stored = await asyncio.to_thread(request_store.get, record.key)
    assert stored.status is RequestStatus.CANCELLED
    assert RequestKey(TENANT, owner, "to-cancel") == record.key


class FakeDaphneSocket:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    def sendClose(self, code: int | None = None) -> None:
        if code != 1000 and not (3000 <= (code or 0) <= 4999):
            raise Exception(f"invalid close code {code}")  # what autobahn does
        self.calls.append(("sendClose", code))

    def sendCloseFrame(self, code: int | None = None) -> None:
        self.calls.append(("sendCloseFrame", code))


@pytest.mark.parametrize(
    ("code", "call"),
    [
        (None, ("sendClose", 1000)),
        (1000, ("sendClose", 1000)),
        (4401, ("sendClose", 4401)),
        (4429, ("sendClose", 4429)),
        (1011, ("sendCloseFrame", 1011)),
    ],
)
def test_daphne_can_close_with_1011(code: int | None, call: tuple[str, int]) -> None:
    from daphne.ws_protocol import WebSocketProtocol

    import streaming.asgi  # noqa: F401 - installs the daphne adjustment

    sock = FakeDaphneSocket()
    WebSocketProtocol.serverClose(sock, code=code)  # type: ignore[arg-type]
    assert sock.calls == [call]
