"""Webhooks across real processes: a ``process_requests`` worker runs a request of a
tenant with an endpoint (a real HTTP server in this process), its sender POSTs the
signed event, gets 5xx and retries; it is SIGKILLed while a retry is in flight; a new
``send_webhooks`` process delivers the same event, with the same ``webhook-id``."""

from __future__ import annotations

import threading
import time
import uuid

import orjson
import pytest
from standardwebhooks import Webhook

from bench.stack import Environment
from connections.webhook_config import new_webhook_secret
from storage import base
from storage.errors import StorageUnavailable
from storage.requests.store import request_store
from storage.webhooks import DeliveryStatus, webhook_store
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e

QUICK = {"duration_s": 0, "steps": 1, "max_requests": 0, "include_connections": False}
SENDER_ARGS = ("--retry-base", "0.3", "--poll-interval", "0.1", "--timeout", "1", "--lease", "1")
# The same options for the sender inside process_requests.
WORKER_ARGS = tuple(a.replace("--", "--webhook-") for a in SENDER_ARGS)


def patiently(call, *args, **kwargs):  # type: ignore[no-untyped-def]
    """A storage call of this test process, retried while a loaded dynalite times out."""
    for _ in range(10):
        try:
            return call(*args, **kwargs)
        except StorageUnavailable:
            time.sleep(1)
    return call(*args, **kwargs)


def wait_until(check, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


def test_a_killed_sender_loses_nothing(e2e: Environment) -> None:
    secret = new_webhook_secret()
    with Receiver(default=503) as receiver:
        e2e.manage(
            "create_tenant-hooks",
            *("create_tenant", "hooks", "--webhook-url", receiver.url),
            *("--webhook-secret", secret),
            env=e2e.env(DJANGO_DEBUG="1"),  # plain http to loopback needs debug on
        ).wait_ok()
        worker = e2e.manage("worker-hooks", "process_requests", *WORKER_ARGS)
        worker.wait_for_output("running")
        base.configure(base.StoreConfig(endpoint_url=e2e.endpoint, table_prefix=e2e.prefix))
        request_id = f"hook-{uuid.uuid4().hex[:8]}"
        patiently(
            request_store.enqueue,
            tenant_id="hooks",
            user_id="alice",
            request_id=request_id,
            action="generate_report",
            payload=QUICK,
        )
        receiver.wait_for(2, timeout=60)  # the first POST and one retry, both 503
        receiver.hold = threading.Event()  # the next retry hangs in flight ...
        receiver.wait_for(3, timeout=60)
        worker.kill9()  # ... while its sender is killed
        receiver.default = 204
        receiver.hold.set()
        receiver.hold = None
        (delivery,) = patiently(webhook_store.list_by_tenant, "hooks").items
        assert delivery.status is DeliveryStatus.PENDING
        assert [a.status_code for a in delivery.attempts] == [503, 503]

        sender = e2e.manage("send_webhooks", "send_webhooks", *SENDER_ARGS)
        sender.wait_for_output("running")
        done = wait_until(
            lambda: (
                (d := patiently(webhook_store.get, delivery.delivery_id)).status
                is DeliveryStatus.DELIVERED
                and d
            ),
            "delivered by the new sender",
        )
        sender.stop()
        posts = list(receiver.received)

    assert len(posts) >= 4
    assert {p.headers["webhook-id"] for p in posts} == {delivery.delivery_id}
    for post in posts:
        event = Webhook(secret).verify(post.body, post.headers)
        assert event["type"] == "request.completed"
        assert event["data"]["request_id"] == request_id
        assert (event["data"]["tenant_id"], event["data"]["user_id"]) == ("hooks", "alice")
    assert orjson.loads(posts[-1].body) == orjson.loads(posts[0].body)
    assert [a.status_code for a in done.attempts][-1] == 204
    assert [a.status_code for a in done.attempts][:2] == [503, 503]
