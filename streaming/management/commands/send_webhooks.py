"""manage.py send_webhooks — the webhook sender on its own (process_requests runs one too)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from streaming.webhook_sender import WebhookSender


def add_sender_arguments(parser: CommandParser, prefix: str = "") -> None:
    """The sender's options (shared with ``process_requests``, there prefixed)."""
    parser.add_argument(f"--{prefix}concurrency", type=int, default=8, help="POSTs at once")
    parser.add_argument(f"--{prefix}lease", type=float, default=60.0, help="claim, seconds")
    parser.add_argument(f"--{prefix}poll-interval", type=float, default=1.0, help="seconds")
    parser.add_argument(
        f"--{prefix}retry-base", type=float, default=1.0, help="first retry after ~this, seconds"
    )
    parser.add_argument(f"--{prefix}timeout", type=float, default=10.0, help="per POST, seconds")


def sender_from_options(options: dict[str, Any], prefix: str = "") -> WebhookSender:
    """A sender configured by :func:`add_sender_arguments`' options."""
    key = prefix.replace("-", "_")
    return WebhookSender(
        concurrency=max(1, options[f"{key}concurrency"]),
        lease_s=options[f"{key}lease"],
        poll_interval_s=options[f"{key}poll_interval"],
        retry_base_s=options[f"{key}retry_base"],
        timeout_s=options[f"{key}timeout"],
    )


class Command(BaseCommand):
    help = (
        "Send the stored webhook events to the tenants' endpoints, retrying with backoff "
        "for up to a day. SIGTERM/SIGINT stop claiming; POSTs under way get a few seconds "
        "to finish (any other sender takes over the rest)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_sender_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        sender = sender_from_options(options)
        asyncio.run(self._run(sender))
        self.stdout.write(f"webhook sender {sender.sender_id} stopped after {sender.sent} sent")

    async def _run(self, sender: WebhookSender) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.stdout.write(f"webhook sender {sender.sender_id} running")
        self.stdout.flush()
        await sender.run(stop)
