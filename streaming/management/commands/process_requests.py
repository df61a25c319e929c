"""manage.py process_requests — the worker."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from streaming.management.commands.send_webhooks import (
    add_sender_arguments,
    sender_from_options,
)
from streaming.webhook_sender import WebhookSender
from streaming.worker import Worker


class Command(BaseCommand):
    help = (
        "Run the worker: claim stored requests atomically and run their handlers. "
        "SIGTERM/SIGINT stop claiming; running requests get --grace seconds to finish, "
        "then are released for another worker."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=settings.STREAMER_WORKER_CONCURRENCY)
        parser.add_argument(
            "--lease", type=float, default=settings.STREAMER_LEASE_S, help="seconds"
        )
        parser.add_argument(
            "--poll-interval", type=float, default=settings.STREAMER_POLL_INTERVAL_S
        )
        parser.add_argument("--grace", type=float, default=10.0, help="shutdown grace, seconds")
        parser.add_argument(
            "--no-webhooks", action="store_true", help="do not send webhooks from this process"
        )
        add_sender_arguments(parser, prefix="webhook-")

    def handle(self, *args: Any, **options: Any) -> None:
        worker = Worker.from_settings(
            concurrency=max(1, options["concurrency"]),
            lease_s=options["lease"],
            poll_interval_s=options["poll_interval"],
            grace_s=options["grace"],
        )
        sender = None if options["no_webhooks"] else sender_from_options(options, "webhook-")
        asyncio.run(self._run(worker, sender))
        self.stdout.write(f"worker {worker.worker_id} stopped after {worker.completed} requests")

    async def _run(self, worker: Worker, sender: WebhookSender | None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.stdout.write(f"worker {worker.worker_id} running (concurrency {worker.concurrency})")
        self.stdout.flush()
        if sender is None:
            await worker.run(stop)
        else:
            await asyncio.gather(worker.run(stop), sender.run(stop))
