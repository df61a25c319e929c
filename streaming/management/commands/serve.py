"""manage.py serve — an ASGI server (uvicorn by default; daphne and granian too) on PORT,
with the worker in the same process unless told otherwise (the one-process local stack;
with Redis, run process_requests separately).

The server is chosen with ``--server`` (default :data:`DEFAULT_SERVER`; the measurements
behind the choice are in docs/performance.md, "Choosing the ASGI server"). Every server
enforces the per-connection output limit (close 4408): uvicorn's ``websockets-sansio``
protocol and granian make a send wait while the client does not read, so frames wait in the
consumer's bounded outbox; daphne never waits, so :mod:`streaming.server_integration`
lets the outbox count Twisted's buffer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

log = logging.getLogger(__name__)

#: The server ``serve`` runs when ``--server`` is not given.
DEFAULT_SERVER = "uvicorn"
#: Concurrent connections one server process accepts. granian and uvicorn otherwise cap
#: them (granian: its listen backlog, 128; uvicorn: unlimited) — sockets are long-lived,
#: so the cap is on what a process can hold, not on requests in flight.
MAX_CONNECTIONS = 100_000
LISTEN_BACKLOG = 2048
#: How long a WebSocket handshake may wait for the application's accept under daphne
#: (granian and uvicorn's sansio protocol set no deadline). daphne's default, 5 s, drops the
#: end of a reconnect storm's queue while its registrations wait their turn
#: (docs/performance.md "Reconnect storms").
HANDSHAKE_TIMEOUT_S = 15
#: Largest WebSocket message a server reads: a bigger one closes the socket with 1009
#: before any application code runs (daphne's own limit; docs/protocol.md §2.1).
MAX_MESSAGE_BYTES = 1024 * 1024


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets (uvicorn, granian or daphne), optionally with a worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        worker = parser.add_mutually_exclusive_group()
        worker.add_argument("--with-worker", dest="worker", action="store_true", default=None)
        worker.add_argument("--no-worker", dest="worker", action="store_false")
        parser.add_argument("--concurrency", type=int, default=settings.STREAMER_WORKER_CONCURRENCY)
        parser.add_argument(
            "--server",
            choices=sorted(SERVERS),
            default=DEFAULT_SERVER,
            help=f"ASGI server (default: {DEFAULT_SERVER})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with_worker = options["worker"]
        if with_worker is None:
            with_worker = settings.STREAMER_INPROCESS_WORKER

        def ready() -> None:
            from storage.base import warm_up
            from streaming.webhook_sender import WebhookSender
            from streaming.worker import Worker

            warm_up()
            if with_worker:
                worker = Worker.from_settings(concurrency=options["concurrency"])
                loop = asyncio.get_event_loop()
                launch.worker_tasks.append(loop.create_task(worker.run(launch.stop)))
                # The in-process worker's companion: this process also sends webhooks.
                launch.worker_tasks.append(loop.create_task(WebhookSender().run(launch.stop)))
            self.stdout.write(
                f"serving on http://{options['host']}:{options['port']}/ "
                f"({'with' if with_worker else 'without'} in-process worker, "
                f"{options['server']})"
            )
            self.stdout.flush()

        launch = Launch(options, ready)
        SERVERS[options["server"]](launch)


@dataclass
class Launch:
    """What a server runner gets: the command's options, ``ready`` to call once it
    listens (starts the in-process worker), and the worker's tasks to stop after it."""

    options: dict[str, Any]
    ready: Callable[[], None]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    worker_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop_worker(self) -> None:
        """Tell the in-process worker to stop and wait for it."""
        self.stop.set()
        if self.worker_tasks:
            await asyncio.gather(*self.worker_tasks)


def _uvicorn(launch: Launch) -> None:
    """uvicorn with its ``websockets-sansio`` protocol, uvloop and httptools.

    Of uvicorn's three WebSocket protocols, ``websockets-sansio`` costs least per
    connection: no tasks per socket (the legacy ``websockets`` one starts three, and
    inspects the handler's signature on every connect), keepalive pings on timers, no
    accept deadline (the legacy one dropped a storm's handshakes after 10 s). Measured
    with ``python -m bench.storm`` (5,000 connects at once, full stack, 2026-11-28):
    7.5 s against 10.3–11.2 s. Its send waits while the client does not read (the
    transport's pause_writing), which the outbox's 1 MiB / 4408 limit relies on."""
    import uvicorn

    from streaming.asgi import application

    config = uvicorn.Config(
        application,
        host=launch.options["host"],
        port=launch.options["port"],
        ws="websockets-sansio",
        loop="uvloop",
        http="httptools",
        # like daphne: no compression, so bytes counted are bytes on the wire
        ws_per_message_deflate=False,
        ws_max_size=MAX_MESSAGE_BYTES,
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=LISTEN_BACKLOG,
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                launch.ready()

    async def serve() -> None:
        await Server(config).serve()
        await launch.stop_worker()

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve())


def _granian(launch: Launch) -> None:
    """granian's embedded server (ASGI, websockets on), sharing this process's event
    loop with the in-process worker."""
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    from streaming.asgi import application

    class Embedded(Server):
        def startup(self, spawn_target: Any, target_loader: Any) -> None:
            super().startup(spawn_target, target_loader)
            launch.ready()

    async def serve() -> None:
        server = Embedded(
            application,
            address=launch.options["host"],
            port=launch.options["port"],
            interface=Interfaces.ASGINL,
            websockets=True,
            backlog=LISTEN_BACKLOG,
            backpressure=MAX_CONNECTIONS,
            log_level=LogLevels.warning,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()
        await launch.stop_worker()

    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve())


def _daphne(launch: Launch) -> None:
    """daphne (Twisted), the stock Channels server; backpressure through
    :mod:`streaming.server_integration`."""
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server
    from twisted.internet import defer, reactor

    from streaming.asgi import application

    def stop_worker() -> Any:
        return defer.Deferred.fromFuture(asyncio.ensure_future(launch.stop_worker()))

    reactor.addSystemEventTrigger("before", "shutdown", stop_worker)  # type: ignore[attr-defined,arg-type]
    Server(
        application,
        # twisted listens with a backlog of 50: a reconnect storm overflows it and
        # connects wait for SYN retransmits (1 s, 3 s, 7 s); the others use LISTEN_BACKLOG.
        endpoints=[
            f"{e}:backlog={LISTEN_BACKLOG}"
            for e in build_endpoint_description_strings(
                host=launch.options["host"], port=launch.options["port"]
            )
        ],
        ready_callable=launch.ready,
        verbosity=0,
        application_close_timeout=10,
        # daphne's default 5 s: in a reconnect storm the last connects of the queue
        # would be dropped while their registration waits (docs/performance.md).
        websocket_handshake_timeout=HANDSHAKE_TIMEOUT_S,
    ).run()


#: ``--server`` name → the function that runs it until SIGTERM/SIGINT.
SERVERS: dict[str, Callable[[Launch], None]] = {
    "daphne": _daphne,
    "granian": _granian,
    "uvicorn": _uvicorn,
}
