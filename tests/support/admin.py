"""Helpers of the admin tests: channels standing in for sockets, request keys, messages."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from storage.requests.model import RequestKey

T0 = 1_700_000_000_000


def new_channel() -> str:
    return async_to_sync(get_channel_layer().new_channel)()


def receive(channel: str, timeout: float = 2.0) -> dict[str, Any]:
    """The next message on ``channel`` (what a consumer of that socket would get)."""
    layer = get_channel_layer()

    async def _receive() -> dict[str, Any]:
        return await asyncio.wait_for(layer.receive(channel), timeout)

    return async_to_sync(_receive)()


def nothing_sent(channel: str) -> bool:
    return channel not in get_channel_layer().channels


def key(request_id: str, tenant_id: str = "acme", user_id: str = "alice") -> RequestKey:
    return RequestKey(tenant_id, user_id, request_id)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []
