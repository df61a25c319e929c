"""manage.py serve — daphne on PORT, with the worker in the same process unless told
otherwise (the one-process local stack; with Redis, run process_requests separately)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets with daphne; optionally run a worker in-process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        worker = parser.add_mutually_exclusive_group()
        worker.add_argument("--with-worker", dest="worker", action="store_true", default=None)
        worker.add_argument("--no-worker", dest="worker", action="store_false")
        parser.add_argument("--concurrency", type=int, default=settings.STREAMER_WORKER_CONCURRENCY)

    def handle(self, *args: Any, **options: Any) -> None:
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server
        from twisted.internet import defer, reactor

        from connections.store.base import warm_up
        from streaming.asgi import application
        from streaming.worker import Worker

        with_worker = options["worker"]
        if with_worker is None:
            with_worker = settings.STREAMER_INPROCESS_WORKER
        stop = asyncio.Event()
        worker_task: list[asyncio.Task[None]] = []

        def ready() -> None:
            warm_up()
            if with_worker:
                worker = Worker(
                    concurrency=options["concurrency"],
                    lease_s=settings.STREAMER_LEASE_S,
                    poll_interval_s=settings.STREAMER_POLL_INTERVAL_S,
                    shards=settings.STREAMER_QUEUE_SHARDS,
                )
                worker_task.append(asyncio.get_event_loop().create_task(worker.run(stop)))
            self.stdout.write(
                f"serving on http://{options['host']}:{options['port']}/ "
                f"({'with' if with_worker else 'without'} in-process worker)"
            )
            self.stdout.flush()

        def stop_worker() -> Any:
            stop.set()
            if worker_task:
                return defer.Deferred.fromFuture(asyncio.ensure_future(worker_task[0]))
            return None

        reactor.addSystemEventTrigger("before", "shutdown", stop_worker)  # type: ignore[attr-defined,arg-type]
        Server(
            application,
            endpoints=build_endpoint_description_strings(
                host=options["host"], port=options["port"]
            ),
            ready_callable=ready,
            verbosity=0,
            application_close_timeout=10,
        ).run()
