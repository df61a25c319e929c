"""The webhook sender: POSTs stored events (``storage/webhooks.py``) to tenants' endpoints.

In the style of healthchecks' ``sendalerts``, like the worker: a plain loop that queries
the due deliveries, claims each with one conditional write (so two senders never send
the same one at once), sends at most ``concurrency`` at a time and stops cleanly. Each
POST is signed as Standard Webhooks says (the ``standardwebhooks`` package):
``webhook-id`` is the delivery id, the same on every retry; ``webhook-timestamp`` the
time of this attempt; ``webhook-signature`` ``v1,<base64 HMAC-SHA256>``.

A 2xx answer delivers it. Anything else (another status, no answer within the timeout,
a refused connection) is retried with exponential backoff, the first retry after about
``retry_base_s`` and never more than an hour apart, until the delivery's deadline (a
day after the event) has passed; then it is FAILED (the admin can resend it). A sender
killed mid-attempt loses nothing: its claim runs out after ``lease_s`` and any sender
sends the delivery again, under the same id. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import urllib3
from standardwebhooks import Webhook

from connections.tenants import TenantPolicy, get_tenant_policy
from storage.base import now_ms
from storage.errors import StoreError
from storage.webhooks import (
    MAX_ERROR_CHARS,
    SHARDS,
    Attempt,
    Delivery,
    WebhookStore,
    webhook_store,
)
from streaming.worker import retry_delay_s

log = logging.getLogger(__name__)

#: Longest wait between two attempts (docs/jobs.md, Webhooks: capped at an hour).
MAX_RETRY_DELAY_S = 3600.0
USER_AGENT = "Streamer-Webhooks/1.0"


def sign_headers(delivery_id: str, body: str, secret: str, at_ms: int) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (signed over id, timestamp, body)."""
    timestamp = datetime.fromtimestamp(at_ms // 1000, tz=UTC)
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(at_ms // 1000),
        "webhook-signature": Webhook(secret).sign(delivery_id, timestamp, body),
    }


class WebhookSender:
    """Sends due webhook deliveries until ``stop`` is set (see the module docstring)."""

    def __init__(
        self,
        *,
        sender_id: str | None = None,
        concurrency: int = 8,
        lease_s: float = 60.0,
        poll_interval_s: float = 1.0,
        retry_base_s: float = 1.0,
        timeout_s: float = 10.0,
        grace_s: float = 10.0,
        store: WebhookStore = webhook_store,
        tenants: Callable[[str], TenantPolicy | None] = get_tenant_policy,
    ) -> None:
        self.sender_id = sender_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency
        # A claim outlives the longest attempt, so a live sender never loses its claim.
        self.lease_ms = int(max(lease_s, timeout_s * 2 + 2) * 1000)
        self.poll_interval_s = poll_interval_s
        self.retry_base_s = retry_base_s
        self.grace_s = grace_s
        self.store = store
        self.tenants = tenants
        self.http = urllib3.PoolManager(
            retries=False,
            timeout=urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s),
            maxsize=concurrency,
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Poll, claim and send until ``stop``; then let attempts under way finish for
        ``grace_s`` seconds (the claims of the others run out and another sender retries)."""
        while not stop.is_set():
            try:
                claimed = await self.poll_once(stop)
            except StoreError:
                log.warning("webhook sender: storage unavailable, retrying")
                claimed = 0
            except Exception:  # a bug or an unexpected answer: one poll lost, not the loop
                log.exception("webhook sender: poll failed, retrying")
                claimed = 0
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_interval_s)
        await self.shutdown()

    async def poll_once(self, stop: asyncio.Event | None = None) -> int:
        """Claim and start sending the due deliveries of every shard; returns how many."""
        claimed = 0
        for shard in range(SHARDS):
            ids = await asyncio.to_thread(self.store.due, shard, limit=self.concurrency)
            for delivery_id in ids:
                if stop is not None and stop.is_set():
                    return claimed
                await self._slots.acquire()
                try:
                    delivery = await asyncio.to_thread(
                        self.store.claim, delivery_id, self.sender_id, self.lease_ms
                    )
                except BaseException:
                    self._slots.release()
                    raise
                if delivery is None:
                    self._slots.release()
                    continue
                claimed += 1
                task = asyncio.create_task(self._deliver(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return claimed

    async def shutdown(self) -> None:
        """Wait up to ``grace_s`` for attempts under way, then abandon the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.grace_s)
        for task in list(self._tasks):
            task.cancel()
        self.http.clear()

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            attempt, delivered = await asyncio.to_thread(self.attempt, delivery)
            next_at = None if delivered else self._next_attempt_at(delivery, attempt.at)
            stored = await asyncio.to_thread(
                self.store.record_attempt,
                delivery,
                self.sender_id,
                attempt,
                delivered=delivered,
                next_attempt_at=next_at,
            )
            if delivered and stored is not None:
                self.sent += 1
        except StoreError:
            # The claim runs out and the delivery is tried again: nothing is lost.
            log.warning("webhook %s: outcome not stored", delivery.delivery_id)
        except Exception:
            log.exception("webhook %s: unexpected error", delivery.delivery_id)
        finally:
            self._slots.release()

    def attempt(self, delivery: Delivery) -> tuple[Attempt, bool]:
        """POST one delivery to its tenant's endpoint now (blocking); returns the attempt
        and whether it was delivered (2xx)."""
        at = now_ms()
        policy = self.tenants(delivery.tenant_id)
        if policy is None or not policy.webhook_url or not policy.webhook_secret:
            return Attempt(at, None, "the tenant has no webhook endpoint"), False
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **sign_headers(delivery.delivery_id, delivery.body, policy.webhook_secret, at),
        }
        try:
            response = self.http.request(
                "POST",
                policy.webhook_url,
                body=delivery.body.encode(),
                headers=headers,
                redirect=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = "timed out" if isinstance(exc, urllib3.exceptions.TimeoutError) else "failed"
            return Attempt(at, None, f"connection {reason}: {type(exc).__name__}"), False
        if 200 <= response.status < 300:
            return Attempt(at, response.status), True
        return Attempt(at, response.status, f"HTTP {response.status}"[:MAX_ERROR_CHARS]), False

    def _next_attempt_at(self, delivery: Delivery, at: int) -> int | None:
        """When to try again after a failed attempt; None once the deadline has passed
        (the last retry is at the deadline itself)."""
        if at >= delivery.deadline_at:
            return None
        number = delivery.attempt_count + 1
        delay_s = min(
            MAX_RETRY_DELAY_S, retry_delay_s(number, self.retry_base_s, MAX_RETRY_DELAY_S)
        )
        delay_ms = int(delay_s * 1000)
        return min(at + delay_ms, delivery.deadline_at)
