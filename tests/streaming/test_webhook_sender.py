"""The webhook sender against a real HTTP endpoint (http.server on 127.0.0.1 in a thread):
what arrives, its Standard Webhooks signature, retries, give-ups and bounded concurrency."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from connections.models import Tenant
from storage.base import now_ms
from storage.requests.model import RequestKey, RequestRecord
from storage.requests.store import request_store
from storage.webhooks import (
    RETRY_WINDOW_MS,
    Attempt,
    DeliveryStatus,
    WebhookDeliveryModel,
    webhook_store,
)
from streaming.webhook_sender import WebhookSender
from streaming.webhooks import record_event
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.usefixtures("webhook_tables")


def ended(outcome: str, user: str = "alice") -> RequestRecord:
    """A request of tenant acme that really went through the store and ended."""
    request_id = uuid.uuid4().hex[:10]
    request_store.enqueue(
        tenant_id="acme", user_id=user, request_id=request_id, action="report", payload={"n": 1}
    )
    key = RequestKey("acme", user, request_id)
    if outcome == "cancelled":
        return request_store.cancel(key)
    assert request_store.claim(key, "w1", 30_000, now=now_ms() + 10) is not None
    if outcome == "completed":
        return request_store.complete(key, {"rows": 3}, worker_id="w1")
    return request_store.fail(key, "PROCESSING_FAILED", "disk full", worker_id="w1")


async def until(check: Callable[[], Any], within_s: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def delivered(delivery_id: str) -> bool:
    return webhook_store.get(delivery_id).status is DeliveryStatus.DELIVERED


@pytest.fixture
def tenant(webhook_tenant: Tenant) -> Tenant:
    """The tenant whose webhook endpoint is the test receiver."""
    return webhook_tenant


@pytest.mark.parametrize(
    ("outcome", "event_type", "extra"),
    [
        ("completed", "request.completed", {"result": {"rows": 3}}),
        (
            "failed",
            "request.failed",
            {"error": {"code": "PROCESSING_FAILED", "message": "disk full"}},
        ),
        ("cancelled", "request.cancelled", {"error": {"code": "CANCELLED"}}),
    ],
)
async def test_an_ended_request_reaches_the_endpoint_signed(
    tenant: Tenant,
    receiver: Receiver,
    run_sender: Callable[..., WebhookSender],
    outcome: str,
    event_type: str,
    extra: dict[str, Any],
) -> None:
    record = await asyncio.to_thread(ended, outcome)
    delivery_id = await asyncio.to_thread(record_event, record)
    run_sender()
    (post,) = await asyncio.to_thread(receiver.wait_for, 1)
    # What a receiver does: verify with the standardwebhooks package, then read the event.
    event = Webhook(tenant.webhook_secret).verify(post.body, post.headers)
    assert post.headers["webhook-id"] == delivery_id
    assert post.headers["content-type"] == "application/json"
    assert event["type"] == event_type
    assert event["timestamp"].endswith("Z")
    data = event["data"]
    assert (data["tenant_id"], data["user_id"], data["request_id"]) == (
        "acme",
        "alice",
        record.request_id,
    )
    assert data["status"] == outcome.upper()
    for name, value in extra.items():
        assert {k: data[name][k] for k in value} == value
    await until(lambda: delivered(delivery_id))


@pytest.mark.parametrize(
    ("secret", "tamper"),
    [
        ("whsec_" + "A" * 43 + "=", False),  # another tenant's secret
        (None, True),  # the right secret, a changed body
    ],
)
async def test_a_forged_or_changed_post_fails_verification(
    tenant: Tenant,
    receiver: Receiver,
    run_sender: Callable[..., WebhookSender],
    secret: str | None,
    tamper: bool,
) -> None:
    await asyncio.to_thread(record_event, await asyncio.to_thread(ended, "completed"))
    run_sender()
    (post,) = await asyncio.to_thread(receiver.wait_for, 1)
    body = post.body.replace("COMPLETED", "FAILED") if tamper else post.body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret or tenant.webhook_secret).verify(body, post.headers)


async def test_5xx_answers_are_retried_with_the_same_id_until_a_2xx(
    tenant: Tenant, receiver: Receiver, run_sender: Callable[..., WebhookSender]
) -> None:
    receiver.plan.extend([503, 500, 404])
    delivery_id = await asyncio.to_thread(record_event, await asyncio.to_thread(ended, "completed"))
    run_sender()
    posts = await asyncio.to_thread(receiver.wait_for, 4)
    assert {p.headers["webhook-id"] for p in posts} == {delivery_id}
    assert len({p.body for p in posts}) == 1  # the same bytes every time
    for post in posts:  # each attempt is signed for its own timestamp
        Webhook(tenant.webhook_secret).verify(post.body, post.headers)
    await until(lambda: delivered(delivery_id))
    stored = await asyncio.to_thread(webhook_store.get, delivery_id)
    assert [a.status_code for a in stored.attempts] == [503, 500, 404, 204]
    assert [a.error for a in stored.attempts] == ["HTTP 503", "HTTP 500", "HTTP 404", ""]
    times = [a.at for a in stored.attempts]
    assert times == sorted(times)


@pytest.mark.parametrize("problem", ["no endpoint", "connection refused"])
async def test_an_unreachable_endpoint_is_retried_and_the_reason_kept(
    transactional_db: None, run_sender: Callable[..., WebhookSender], problem: str
) -> None:
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/"
    await asyncio.to_thread(
        Tenant.objects.create, id="acme", webhook_url=url, webhook_secret="whsec_" + "B" * 44
    )
    record = await asyncio.to_thread(ended, "completed")
    delivery_id = await asyncio.to_thread(record_event, record)
    if problem == "no endpoint":
        await asyncio.to_thread(Tenant.objects.filter(id="acme").update, webhook_url="")
    run_sender(tenants=_uncached_policy)
    stored = await until(lambda: (d := webhook_store.get(delivery_id)).attempt_count >= 2 and d)
    assert stored.status is DeliveryStatus.PENDING  # still retried
    reason = "the tenant has no webhook endpoint" if problem == "no endpoint" else "connection"
    assert all(a.status_code is None and reason in a.error for a in stored.attempts)


def _uncached_policy(tenant_id: str) -> Any:
    from connections.tenants import forget_tenant, get_tenant_policy

    forget_tenant(tenant_id)
    return get_tenant_policy(tenant_id)


async def test_a_delivery_past_its_deadline_fails_after_one_last_attempt(
    tenant: Tenant, receiver: Receiver, run_sender: Callable[..., WebhookSender]
) -> None:
    receiver.default = 500
    delivery_id = await asyncio.to_thread(record_event, await asyncio.to_thread(ended, "completed"))
    # The event happened a day ago: its retry window has closed.
    item = await asyncio.to_thread(WebhookDeliveryModel.get, delivery_id)
    await asyncio.to_thread(
        item.update, actions=[WebhookDeliveryModel.deadline_at.set(now_ms() - 1)]
    )
    run_sender()
    stored = await until(
        lambda: (d := webhook_store.get(delivery_id)).status is DeliveryStatus.FAILED and d
    )
    assert [a.status_code for a in stored.attempts] == [500]
    assert len(receiver.received) == 1


@pytest.mark.parametrize(
    ("attempts", "low_s", "high_s"), [(0, 0.5, 1.5), (3, 4, 12), (30, 1800, 3600)]
)
def test_backoff_starts_near_a_second_and_is_capped_at_an_hour(
    attempts: int, low_s: float, high_s: float
) -> None:
    sender = WebhookSender()
    from storage.webhooks import Delivery

    delivery = Delivery(
        delivery_id="msg_x",
        tenant_id="acme",
        user_id="alice",
        request_id="r",
        event_type="request.completed",
        body="{}",
        status=DeliveryStatus.PENDING,
        created_at=0,
        deadline_at=10 * RETRY_WINDOW_MS,
        attempt_count=attempts,
    )
    at = 1_000_000
    for _ in range(20):
        next_at = sender._next_attempt_at(delivery, at)
        assert next_at is not None
        assert low_s * 1000 <= next_at - at <= high_s * 1000
    near_deadline = sender._next_attempt_at(delivery, delivery.deadline_at - 10)
    assert near_deadline == delivery.deadline_at


async def test_never_more_than_concurrency_posts_at_once(
    tenant: Tenant, receiver: Receiver, run_sender: Callable[..., WebhookSender]
) -> None:
    receiver.hold = threading.Event()
    ids = [
        await asyncio.to_thread(record_event, await asyncio.to_thread(ended, "completed"))
        for _ in range(5)
    ]
    run_sender(concurrency=2)
    await asyncio.to_thread(receiver.wait_for, 2)
    await asyncio.sleep(0.3)  # give a third POST the chance to arrive, if it could
    assert len(receiver.received) == 2
    receiver.hold.set()
    await asyncio.to_thread(receiver.wait_for, 5)
    await until(lambda: all(delivered(d) for d in ids))
    assert sorted(p.headers["webhook-id"] for p in receiver.received) == sorted(ids)


async def test_a_tenant_without_an_endpoint_gets_no_event(transactional_db: None) -> None:
    await asyncio.to_thread(Tenant.objects.create, id="acme")
    record = await asyncio.to_thread(ended, "completed")
    assert await asyncio.to_thread(record_event, record) is None
    assert webhook_store.list_by_tenant("acme").items == []


async def test_the_same_ending_recorded_twice_is_one_delivery(tenant: Tenant) -> None:
    record = await asyncio.to_thread(ended, "completed")
    first = await asyncio.to_thread(record_event, record)
    second = await asyncio.to_thread(record_event, record)
    assert first == second
    page = await asyncio.to_thread(webhook_store.list_by_tenant, "acme")
    assert [d.delivery_id for d in page.items] == [first]
    body = orjson.loads(page.items[0].body)
    assert body["data"]["request_id"] == record.request_id
    assert Attempt  # imported for the type of stored attempts


@pytest.mark.parametrize("error", [RuntimeError("a bug"), KeyError("due_shard")])
async def test_an_unexpected_error_of_a_poll_loses_one_poll_not_the_sender(
    tenant: Tenant,
    receiver: Receiver,
    run_sender: Callable[..., WebhookSender],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    """(moto, not thread-safe, once raised KeyError from a query racing an update.)"""
    from storage.webhooks import WebhookStore

    delivery_id = await asyncio.to_thread(record_event, await asyncio.to_thread(ended, "completed"))
    real = WebhookStore.due
    raised: list[Exception] = []

    def broken_once(self: WebhookStore, *args: Any, **kwargs: Any) -> Any:
        if not raised:
            raised.append(error)
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(WebhookStore, "due", broken_once)
    run_sender()
    await until(lambda: delivered(delivery_id))
    assert raised == [error]
    assert {p.headers["webhook-id"] for p in receiver.received} == {delivery_id}


@pytest.mark.parametrize("failing", ["due", "claim", "record_attempt"])
async def test_storage_outages_lose_nothing(
    tenant: Tenant,
    receiver: Receiver,
    run_sender: Callable[..., WebhookSender],
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    """The outbox unreachable while polling, claiming or storing an outcome: the sender
    keeps running, and once storage is back the delivery is delivered (the claim of an
    unstored outcome runs out, so it is sent again under the same id)."""
    from storage.errors import StorageUnavailable
    from storage.webhooks import WebhookStore

    delivery_id = await asyncio.to_thread(record_event, await asyncio.to_thread(ended, "completed"))
    real = getattr(WebhookStore, failing)
    outages = {"left": 2}

    def flaky(self: WebhookStore, *args: Any, **kwargs: Any) -> Any:
        if outages["left"]:
            outages["left"] -= 1
            raise StorageUnavailable("storage unavailable during webhooks")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(WebhookStore, failing, flaky)
    run_sender(lease_s=0.3, timeout_s=0.1)
    await until(lambda: delivered(delivery_id))
    assert outages["left"] == 0
    assert {p.headers["webhook-id"] for p in receiver.received} == {delivery_id}
