"""Sockets held by our own daphne servers, reached through the Channels layer."""

from __future__ import annotations

from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from connections.transports.base import Transport, TransportError

FRAME_MESSAGE = "streamer.frame"
CLOSE_MESSAGE = "streamer.close"
FRAMES_MESSAGE = "streamer.frames"  # several FRAME_MESSAGEs, in order
# Set (never sent to the client) on an ``output`` frame replayed from storage: "more",
# or "last" on the last of a replay (streaming/output_delivery.py).
REPLAY_MARK = "_replay"


class ChannelsTransport(Transport):
    """Sends to the consumer's channel name; the consumer writes the frame to its socket.

    Besides the text, the message carries the few frame fields the consumer needs to
    enforce the per-request ordering guarantees without decoding JSON again. Frames to a
    tenant or a user reach these sockets through the fan-out hub (``connections.hub``).
    """

    through_hub = True

    def __init__(self, name: str, *, layer_alias: str = "default", **config: Any) -> None:
        super().__init__(name, **config)
        self.layer_alias = layer_alias

    async def send(self, address: str, frame: dict[str, Any], text: str) -> None:
        await self._send(address, frame_message(frame, text))

    async def send_many(self, address: str, frames: list[dict[str, Any]], texts: list[str]) -> None:
        """One channel message for many frames: a burst of output takes one slot of the
        connection's channel, not one per chunk."""
        batch = [frame_message(f, t) for f, t in zip(frames, texts, strict=True)]
        await self._send(address, {"type": FRAMES_MESSAGE, "frames": batch})

    async def close(self, address: str, code: int, reason: str = "") -> None:
        await self._send(address, {"type": CLOSE_MESSAGE, "code": code, "reason": reason})

    async def _send(self, address: str, message: dict[str, Any]) -> None:
        layer = get_channel_layer(self.layer_alias)
        if layer is None:
            raise TransportError("no channel layer configured")
        try:
            await layer.send(address, message)
        except ChannelFull as exc:
            raise TransportError("channel full") from exc
        except TypeError as exc:  # the layer's check of the name: keep the contract
            raise TransportError("invalid channel name") from exc
        except Exception as exc:  # the layer itself is down (Redis): not delivered
            raise TransportError("channel layer unavailable") from exc


def frame_message(frame: dict[str, Any], text: str) -> dict[str, Any]:
    """The channel message of one encoded frame (what the consumer's frame path takes)."""
    message = {
        "type": FRAME_MESSAGE,
        "text": text,
        "frame_type": frame.get("type"),
        "request_id": frame.get("request_id"),
        "percentage": frame.get("percentage"),
    }
    if "seq" in frame:  # output frames: their order, and whether a replay sent them
        message["seq"] = frame["seq"]
        message["replay"] = frame.get(REPLAY_MARK)
    return message
