"""manage.py serve — daphne (default) or uvicorn on PORT, with the worker in the same
process unless told otherwise (the one-process local stack; with Redis, run
process_requests separately).

Both servers enforce the per-connection output limit (close 4408): uvicorn's
``websockets`` protocol makes a send wait while the client does not read, so frames
wait in the consumer's bounded outbox; daphne never waits, so
:mod:`streaming.server_integration` lets the outbox count Twisted's buffer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets (daphne or uvicorn); optionally run a worker in-process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        worker = parser.add_mutually_exclusive_group()
        worker.add_argument("--with-worker", dest="worker", action="store_true", default=None)
        worker.add_argument("--no-worker", dest="worker", action="store_false")
        parser.add_argument("--concurrency", type=int, default=settings.STREAMER_WORKER_CONCURRENCY)
        parser.add_argument(
            "--server",
            choices=("daphne", "uvicorn"),
            default="daphne",
            help="ASGI server (default: daphne)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with_worker = options["worker"]
        if with_worker is None:
            with_worker = settings.STREAMER_INPROCESS_WORKER
        stop = asyncio.Event()
        worker_task: list[asyncio.Task[None]] = []

        def ready() -> None:
            from storage.base import warm_up
            from streaming.webhook_sender import WebhookSender
            from streaming.worker import Worker

            warm_up()
            if with_worker:
                worker = Worker.from_settings(concurrency=options["concurrency"])
                loop = asyncio.get_event_loop()
                worker_task.append(loop.create_task(worker.run(stop)))
                # The in-process worker's companion: this process also sends webhooks.
                worker_task.append(loop.create_task(WebhookSender().run(stop)))
            self.stdout.write(
                f"serving on http://{options['host']}:{options['port']}/ "
                f"({'with' if with_worker else 'without'} in-process worker, "
                f"{options['server']})"
            )
            self.stdout.flush()

        if options["server"] == "uvicorn":
            asyncio.run(self._uvicorn(options, ready, stop, worker_task))
        else:
            self._daphne(options, ready, stop, worker_task)

    @staticmethod
    async def _uvicorn(
        options: dict[str, Any],
        ready: Any,
        stop: asyncio.Event,
        worker_task: list[asyncio.Task[None]],
    ) -> None:
        """uvicorn with its ``websockets`` protocol, which applies backpressure on send."""
        import uvicorn

        from streaming.asgi import application

        config = uvicorn.Config(
            application,
            host=options["host"],
            port=options["port"],
            ws="websockets",
            # like daphne: no compression, so bytes counted are bytes on the wire
            ws_per_message_deflate=False,
            lifespan="off",
            log_level="warning",
            access_log=False,
        )

        class Server(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if self.started:
                    ready()

        await Server(config).serve()
        stop.set()
        if worker_task:
            await asyncio.gather(*worker_task)

    @staticmethod
    def _daphne(
        options: dict[str, Any],
        ready: Any,
        stop: asyncio.Event,
        worker_task: list[asyncio.Task[None]],
    ) -> None:
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server
        from twisted.internet import defer, reactor

        from streaming.asgi import application

        def stop_worker() -> Any:
            stop.set()
            if worker_task:
                return defer.Deferred.fromFuture(
                    asyncio.ensure_future(asyncio.gather(*worker_task))
                )
            return None

        reactor.addSystemEventTrigger("before", "shutdown", stop_worker)  # type: ignore[attr-defined,arg-type]
        Server(
            application,
            # twisted listens with a backlog of 50: a reconnect storm overflows it
            # and connects wait for SYN retransmits (1 s, 3 s, 7 s); uvicorn uses 2048.
            endpoints=[
                f"{e}:backlog=2048"
                for e in build_endpoint_description_strings(
                    host=options["host"], port=options["port"]
                )
            ],
            ready_callable=ready,
            verbosity=0,
            application_close_timeout=10,
            # daphne's default 5 s: in a reconnect storm the last connects of the queue
            # would be dropped while their registration waits (docs/performance.md).
            websocket_handshake_timeout=15,
        ).run()
