"""What a transport is: the thing that puts a frame on a socket held somewhere."""

from __future__ import annotations

import abc
from typing import Any


class TransportError(Exception):
    """A frame could not be delivered (the connection may still be alive)."""


class ConnectionGone(TransportError):
    """The socket no longer exists; its records should be removed."""


class Transport(abc.ABC):
    """Delivers frames to the sockets one kind of server holds.

    ``address`` is what the connection record stores for this transport: a channel
    name for the Channels transport, an API Gateway endpoint + connection id for the
    API Gateway transport.
    """

    #: Its sockets register with this process's fan-out hub (``connections.hub``), which
    #: delivers frames to a tenant or a user to them; storage is not read for them.
    through_hub = False

    def __init__(self, name: str, **config: Any) -> None:
        self.name = name
        self.config = config

    @abc.abstractmethod
    async def send(self, address: str, frame: dict[str, Any], text: str) -> None:
        """Deliver one encoded frame; raise ConnectionGone or TransportError."""

    async def send_many(self, address: str, frames: list[dict[str, Any]], texts: list[str]) -> None:
        """Deliver encoded frames in order (a transport that can batch them overrides
        this: an output stream sends hundreds of small frames at once)."""
        for frame, text in zip(frames, texts, strict=True):
            await self.send(address, frame, text)

    @abc.abstractmethod
    async def close(self, address: str, code: int, reason: str = "") -> None:
        """Close the socket at ``address`` with a WebSocket close code."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Wait for in-flight sends and release resources (shutdown)."""
