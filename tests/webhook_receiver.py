"""A real webhook endpoint for tests: ``http.server`` on 127.0.0.1 in a thread.

It records every POST (headers, body) and answers from a plan: the statuses in
``plan`` first, in order, then ``default``. ``hold`` (an Event), when set on the
receiver, makes the next POSTs wait until it is set, so a test can kill a sender while
its request is in flight.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: str


class Receiver:
    def __init__(self, plan: list[int] | None = None, default: int = 204) -> None:
        self.plan: deque[int] = deque(plan or [])
        self.default = default
        self.received: list[Received] = []
        self.hold: threading.Event | None = None
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode()
                with receiver.arrived:
                    receiver.received.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status = receiver.plan.popleft() if receiver.plan else receiver.default
                    hold = receiver.hold
                    receiver.arrived.notify_all()
                if hold is not None:
                    hold.wait(30)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until at least ``count`` POSTs arrived; returns them all."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} POSTs arrived, expected {count}")
            return list(self.received)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()
