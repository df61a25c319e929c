"""Each way a request ends stores exactly one webhook event when its tenant has an
endpoint (streaming/webhooks.py, called by the worker and by cancel_request), and
none otherwise; a storage failure there never keeps the terminal frame from clients."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from connections.models import Tenant
from connections.webhook_config import new_webhook_secret
from storage.errors import StorageUnavailable
from storage.requests.store import RequestStore
from storage.webhooks import WebhookStore, delivery_id_for, webhook_store
from streaming.actions.registry import ActionRegistry, FinalError, action
from streaming.lifecycle import cancel as cancel_request
from tests.streaming.test_worker import make_worker
from tests.support.worker import TENANT, eventually, running, submit

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")


async def set_endpoint(url: str) -> None:
    await asyncio.to_thread(
        Tenant.objects.update_or_create,
        pk=TENANT,
        defaults={"webhook_url": url, "webhook_secret": new_webhook_secret() if url else ""},
    )


def events_of(request_id: str) -> list[dict[str, Any]]:
    page = webhook_store.list_by_tenant(TENANT, limit=100)
    return [orjson.loads(d.body) for d in page.items if d.request_id == request_id]


@pytest.fixture
def handlers(actions: ActionRegistry) -> ActionRegistry:
    @action("t.ok", mode="async", registry=actions)
    async def ok(job: Any, payload: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    @action("t.bad", mode="async", registry=actions)
    async def bad(job: Any, payload: dict[str, Any]) -> None:
        raise FinalError("no such file")

    @action("t.slow", mode="async", registry=actions)
    async def slow(job: Any, payload: dict[str, Any]) -> None:
        await asyncio.sleep(30)

    return actions


@pytest.mark.parametrize(
    ("name", "event_type", "status"),
    [
        ("t.ok", "request.completed", "COMPLETED"),
        ("t.bad", "request.failed", "FAILED"),
        ("t.slow", "request.cancelled", "CANCELLED"),
    ],
)
async def test_a_request_ending_stores_one_event(
    store: RequestStore,
    handlers: ActionRegistry,
    make_socket: Any,
    name: str,
    event_type: str,
    status: str,
) -> None:
    await set_endpoint("https://hooks.example.com/x")
    sock = await make_socket()
    worker = make_worker(store, handlers)
    async with running(worker):
        record = await submit(sock, name)
        if name == "t.slow":
            await eventually(lambda: worker.jobs, what="running")
            await cancel_request(record.key)
        await sock.until_terminal(record.request_id)
    final = await asyncio.to_thread(store.get, record.key)
    (event,) = await asyncio.to_thread(events_of, record.request_id)
    assert event["type"] == event_type
    assert event["data"] == {**final.public(), "tenant_id": TENANT, "user_id": "alice"}
    assert event["data"]["status"] == status
    delivery = await asyncio.to_thread(
        webhook_store.get,
        delivery_id_for(TENANT, "alice", record.request_id, final.ended_at or 0),
    )
    assert delivery.event_type == event_type


async def test_no_endpoint_no_event(
    store: RequestStore, handlers: ActionRegistry, make_socket: Any
) -> None:
    await set_endpoint("")
    sock = await make_socket()
    async with running(make_worker(store, handlers)):
        record = await submit(sock, "t.ok")
        await sock.until_terminal(record.request_id)
    assert await asyncio.to_thread(events_of, record.request_id) == []


async def test_an_outbox_outage_still_lets_the_terminal_frame_through(
    store: RequestStore,
    handlers: ActionRegistry,
    make_socket: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await set_endpoint("https://hooks.example.com/x")

    def down(self: WebhookStore, **kwargs: Any) -> bool:
        raise StorageUnavailable("storage unavailable during webhooks.add")

    monkeypatch.setattr(WebhookStore, "add", down)
    sock = await make_socket()
    async with running(make_worker(store, handlers)):
        record = await submit(sock, "t.ok")
        frames = await sock.until_terminal(record.request_id)
    assert frames[-1]["type"] == "complete"
