"""manage.py process_requests — the worker."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

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

    def handle(self, *args: Any, **options: Any) -> None:
        worker = Worker.from_settings(
            concurrency=max(1, options["concurrency"]),
            lease_s=options["lease"],
            poll_interval_s=options["poll_interval"],
            grace_s=options["grace"],
        )
        asyncio.run(self._run(worker))
        self.stdout.write(f"worker {worker.worker_id} stopped after {worker.completed} requests")

    async def _run(self, worker: Worker) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.stdout.write(f"worker {worker.worker_id} running (concurrency {worker.concurrency})")
        self.stdout.flush()
        await worker.run(stop)
