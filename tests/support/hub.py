"""Sockets that tests stand in for with a bare channel: held by this process's fan-out
hub the way a consumer's socket is, with that channel as their frame path."""

from __future__ import annotations

from typing import Any

from channels.layers import get_channel_layer

from connections.hub import Member, hub
from storage.connection import ConnectionInfo


def channel_member(info: ConnectionInfo) -> Member:
    """A hub member whose frames go to the channel ``info.address`` (read it with the
    layer's ``receive``), as the consumer on that channel would get them."""

    async def deliver(message: dict[str, Any]) -> bool:
        await get_channel_layer().send(info.address, message)
        return True

    return Member(info.connection_id, info.tenant_id, info.user_id, deliver)


async def hold(info: ConnectionInfo) -> ConnectionInfo:
    """Register ``info``'s channel with this process's hub (a socket this server holds)."""
    await hub.register(channel_member(info))
    return info
