"""daphne integration for the output limit (docs/protocol.md §5, close 4408).

daphne (Twisted + autobahn) never makes ``websocket.send`` wait: every frame is appended
to the Twisted transport's write buffer, which grows without bound while the client
does not read. Two small patches, installed by :mod:`streaming.asgi`:

* every WebSocket scope gets the ``streamer.output_buffer`` extension, a callable
  returning the bytes Twisted still holds for that socket, so the consumer's
  :class:`~streaming.outbox.Outbox` counts them against the limit;
* a socket closed with 4408 gets :data:`SLOW_CLOSE_GRACE_S` to finish the close
  handshake (autobahn's default is 1 s) so a client that reads again sees the close
  code; after that autobahn aborts the TCP connection, which frees its buffer even when
  the client never reads.

Both rely on Twisted's ``FileDescriptor`` buffer attributes (``dataBuffer``, ``offset``,
``_tempDataLen``); ``tests/unit/realtime/test_backpressure.py`` fails if an upgrade
removes them.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from streaming.outbox import BUFFER_EXTENSION

SLOW_CONSUMER = 4408
#: Seconds a slow consumer gets to read up to the close frame before the socket is cut.
SLOW_CLOSE_GRACE_S = 10.0
_MAX_WRAPPED_TRANSPORTS = 4


def twisted_buffered_bytes(transport: Any) -> int:
    """Bytes written to a Twisted transport (and the transports it wraps, e.g. TLS)
    that have not reached the kernel yet."""
    total = 0
    for _ in range(_MAX_WRAPPED_TRANSPORTS):
        if transport is None:
            break
        data = getattr(transport, "dataBuffer", None)
        if data is not None:
            total += len(data) - transport.offset + transport._tempDataLen
        transport = getattr(transport, "transport", None)
    return total


def _protocol_buffered(protocol: Any) -> int:
    return twisted_buffered_bytes(getattr(protocol, "transport", None))


def install_daphne_backpressure() -> bool:
    """Patch daphne as described above; False when daphne is not installed."""
    try:
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # pragma: no cover - another ASGI server
        return False
    create_application = Server.create_application
    server_close = WebSocketProtocol.serverClose

    def create_with_probe(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") == "websocket":
            extensions = scope.setdefault("extensions", {})
            extensions[BUFFER_EXTENSION] = partial(_protocol_buffered, protocol)
        return create_application(self, protocol, scope)

    def close_with_grace(self: Any, code: int | None = None) -> None:
        if code == SLOW_CONSUMER:
            self.closeHandshakeTimeout = max(self.closeHandshakeTimeout, SLOW_CLOSE_GRACE_S)
        server_close(self, code)

    # Each patch once, even when streaming.asgi is imported again (and re-patches
    # serverClose for 1011).
    if not getattr(create_application, "_streamer", False):
        create_with_probe._streamer = True  # type: ignore[attr-defined]
        Server.create_application = create_with_probe
    if not getattr(server_close, "_streamer", False):
        close_with_grace._streamer = True  # type: ignore[attr-defined]
        WebSocketProtocol.serverClose = close_with_grace
    return True
