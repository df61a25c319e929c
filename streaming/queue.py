"""The request queue: durable in DynamoDB, with a nudge through the channel layer so a
worker picks a new request up at once (polling the ``due`` index is the fallback)."""

from __future__ import annotations

import logging

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

WAKE_CHANNEL = "streamer.requests"
WORKERS_GROUP = "streamer.workers"


async def wake_worker(request_key: str) -> None:
    """Tell one worker that ``request_key`` is ready to be claimed."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.send(WAKE_CHANNEL, {"type": "request.ready", "key": request_key})
    except ChannelFull:
        log.debug("wake channel full; workers will find the request by polling")
    except Exception:  # the layer (Redis) is down: polling still finds the request
        log.warning("could not wake a worker", exc_info=True)


async def notify_cancelled(request_key: str) -> None:
    """Tell every worker that ``request_key`` was cancelled (the holder stops it)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(WORKERS_GROUP, {"type": "request.cancelled", "key": request_key})
    except Exception:  # the worker also sees it when it next renews its lease
        log.warning("could not notify workers of a cancel", exc_info=True)
