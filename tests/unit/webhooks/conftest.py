"""Fixtures of the webhook tests: tables in moto, a tenant whose endpoint is a real local
HTTP server (``tests/webhook_receiver.py``), and a sender that polls fast."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from connections.models import Tenant
from connections.webhook_config import new_webhook_secret
from storage.base import StoreConfig
from streaming.webhook_sender import WebhookSender
from tests.webhook_receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def tenant(transactional_db: None, receiver: Receiver) -> Tenant:
    return Tenant.objects.create(
        id="acme", webhook_url=receiver.url, webhook_secret=new_webhook_secret()
    )


@pytest.fixture
def tables(moto_dynamodb: StoreConfig) -> StoreConfig:
    return moto_dynamodb


@pytest.fixture
async def run_sender(tables: StoreConfig) -> AsyncIterator[Callable[..., WebhookSender]]:
    """Start a sender (fast polling, fast retries) that runs until the test ends."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(**options: Any) -> WebhookSender:
        settings = {"poll_interval_s": 0.02, "retry_base_s": 0.05, "timeout_s": 2.0, **options}
        sender = WebhookSender(**settings)
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(sender.run(stop))))
        return sender

    yield start
    for stop, task in running:
        stop.set()
        await task
