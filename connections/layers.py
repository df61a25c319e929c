"""The channel layer of a Redis-less run, and whether a socket's channel is in reach.

Channels' ``InMemoryChannelLayer`` lives in one process: a frame sent from another
process (a management command, a separate worker) lands in that process's own memory
and reaches no socket, yet ``send()`` returns as if it had been delivered.
:class:`ProcessChannelLayer` is that layer with the sender's process named in every
socket's channel, so that such a send is refused instead of silently lost, and so that
a command can tell before it acts whether the sockets it must reach are in reach
(:func:`reaches`). Layers shared by every process (``channels_redis``) reach them all.

It also sweeps expired messages at most once a :data:`SWEEP_INTERVAL_S` instead of on
every ``receive()``: the stock sweep walks every channel and group, so each socket's
``receive()`` costs O(sockets) and a reconnect storm O(sockets²) (measured, bench.storm,
2026-11-28: half of the event loop's CPU while 5,000 clients connected).
"""

from __future__ import annotations

import secrets
from time import monotonic
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

_MARKER = ".inmemory"
#: Seconds between two sweeps of expired messages and group memberships. A message may
#: thus be read up to this long after its ``expiry`` (60 s in settings), never lost.
SWEEP_INTERVAL_S = 1.0

#: What a command that cannot reach the servers' sockets tells its user to do.
SHARED_LAYER_HINT = (
    "Run it with REDIS_URL set to the Redis the servers use (./scripts/run starts one at "
    "redis://127.0.0.1:6379/0 and prints it), or act from the admin, which runs in the server."
)


class ChannelNotInProcess(Exception):
    """The channel belongs to a socket of another process, which this layer cannot reach."""


class ProcessChannelLayer(InMemoryChannelLayer):
    """``InMemoryChannelLayer`` whose socket channels carry a token of this process."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        # channels 4.3 leaves an in-memory layer's ``channel_capacity`` uncompiled (its
        # get_capacity then fails on any channel); compile it as channels_redis does.
        self.channel_capacity = self.compile_capacities(config.get("channel_capacity") or {})
        self.process_token = secrets.token_hex(6)
        self._next_sweep = 0.0

    def _clean_expired(self) -> None:
        """Channels' sweep of expired messages, at most once a SWEEP_INTERVAL_S."""
        now = monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL_S
        super()._clean_expired()  # type: ignore[no-untyped-call]

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A socket's channel name, e.g. ``specific..inmemory-1a2b3c4d5e6f!AbCdEf...``."""
        name = await super().new_channel(prefix)
        return name.replace(f"{_MARKER}!", f"{_MARKER}-{self.process_token}!", 1)

    def holds(self, channel: str) -> bool:
        """Whether a message sent to ``channel`` can reach its reader: a named channel
        (``streamer.requests``) is read in this process if at all; a socket's channel
        only when this process's layer issued it."""
        if "!" not in channel:
            return True
        return f"{_MARKER}-{self.process_token}!" in channel

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Queue ``message``, or raise :class:`ChannelNotInProcess` for a socket held by
        another process (the transport then reports the frame as failed)."""
        if not self.holds(channel):
            raise ChannelNotInProcess(channel)
        await super().send(channel, message)


def reaches(channel: str, alias: str = "default") -> bool:
    """Whether this process's channel layer ``alias`` reaches the socket on ``channel``:
    always for a shared layer (Redis); for :class:`ProcessChannelLayer` only a socket
    of this process. A plain ``InMemoryChannelLayer`` cannot tell and is trusted."""
    layer = get_channel_layer(alias)
    if layer is None:
        return False
    holds = getattr(layer, "holds", None)
    return True if holds is None else bool(holds(channel))
