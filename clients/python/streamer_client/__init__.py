"""Python client of the Streamer WebSocket service (asyncio, on ``websockets``), the
``streamer-client`` distribution (``pip install ./clients/python``).

    from streamer_client import StreamerClient

    async with StreamerClient("ws://127.0.0.1:8000/ws", token=token) as client:
        print(await client.request("echo", {"hello": "world"}))
        report = await client.request(
            "generate_report", {"duration_s": 5}, on_progress=lambda p: print(p.percentage)
        )

See docs/clients.md.
"""

from streamer_client.client import (
    CLOSED,
    CONNECTING,
    IDLE,
    OPEN,
    RECONNECTING,
    Backoff,
    Progress,
    StreamerClient,
    StreamerError,
    WatchedRequest,
    token_expires_at,
)

# The wire protocol version this client speaks (docs/protocol.md).
PROTOCOL_VERSION = "1.1"

__all__ = [
    "CLOSED",
    "CONNECTING",
    "IDLE",
    "OPEN",
    "PROTOCOL_VERSION",
    "RECONNECTING",
    "Backoff",
    "Progress",
    "StreamerClient",
    "StreamerError",
    "WatchedRequest",
    "token_expires_at",
]
