"""Plain HTTP endpoints: health, metrics and the demo page."""

from __future__ import annotations

import asyncio
import logging
import uuid

from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connections.store.connection import connection_store
from connections.store.errors import NotFound, StoreError

log = logging.getLogger(__name__)


def _storage_ok() -> bool:
    try:
        connection_store.get("healthz-probe")
    except NotFound:
        return True
    except StoreError:
        return False
    return True


async def _layer_ok() -> bool:
    layer = get_channel_layer()
    if layer is None:
        return False
    channel = f"healthz.{uuid.uuid4().hex}"
    try:
        await asyncio.wait_for(layer.send(channel, {"type": "healthz"}), timeout=2)
        await asyncio.wait_for(layer.receive(channel), timeout=2)
    except Exception:
        log.warning("channel layer health check failed", exc_info=True)
        return False
    return True


async def healthz(request: HttpRequest) -> JsonResponse:
    """200 when DynamoDB and the channel layer answer, 503 otherwise."""
    storage = await asyncio.to_thread(_storage_ok)
    layer = await _layer_ok()
    ok = storage and layer
    body = {
        "status": "ok" if ok else "unavailable",
        "checks": {"storage": "ok" if storage else "fail", "channel_layer": "ok" if layer else "fail"},
    }
    return JsonResponse(body, status=200 if ok else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


def index(request: HttpRequest) -> HttpResponse:
    """The demo page for end users."""
    return render(request, "streaming/index.html")
