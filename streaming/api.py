"""HTTP APIs for back-end services: publishing, and API Gateway events."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from connections.models import ApiKey
from connections.publishing import Audience, PublishError, build_frame, publish
from connections.store.errors import StorageUnavailable
from protocol import codec
from streaming.apigw import handle_websocket_event

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _body(request: HttpRequest) -> Any:
    try:
        return codec.loads(request.body)
    except ValueError:
        return None


@csrf_exempt
@require_POST
async def publish_view(request: HttpRequest) -> JsonResponse:
    """``POST /api/v1/publish`` with ``Authorization: Bearer <tenant API key>`` and a body
    ``{"connection_id"|"user_id"|(neither: whole tenant), "frame": {...}}``."""
    header = request.headers.get("Authorization", "")
    secret = header[7:] if header.startswith("Bearer ") else ""
    key = await sync_to_async(ApiKey.authenticate)(secret) if secret else None
    if key is None or not key.tenant.active:
        return _error(401, "UNAUTHORIZED", "A valid API key is required")
    body = _body(request)
    if not isinstance(body, dict):
        return _error(400, "VALIDATION_ERROR", "Body must be a JSON object")
    connection_id, user_id = body.get("connection_id"), body.get("user_id")
    if connection_id is not None and user_id is not None:
        return _error(400, "VALIDATION_ERROR", "Give connection_id or user_id, not both")
    for name, value in (("connection_id", connection_id), ("user_id", user_id)):
        if value is not None and (not isinstance(value, str) or not value or len(value) > 256):
            return _error(400, "VALIDATION_ERROR", f"{name} must be a non-empty string")
    try:
        frame = build_frame(body.get("frame"))
        report = await publish(Audience(key.tenant_id, connection_id, user_id), frame)
    except PublishError as exc:
        return _error(400, "VALIDATION_ERROR", str(exc))
    except StorageUnavailable:
        return _error(503, "SERVICE_UNAVAILABLE", "Service temporarily unavailable")
    return JsonResponse(
        {"delivered": report.delivered, "gone": len(report.gone), "failed": len(report.failed)}
    )


@csrf_exempt
@require_POST
async def apigw_events_view(request: HttpRequest) -> JsonResponse:
    """``POST /apigw/events``: an API Gateway WebSocket event forwarded by an HTTP
    integration, authenticated by the ``X-Streamer-Secret`` header."""
    expected = getattr(settings, "STREAMER_APIGW_SHARED_SECRET", "")
    given = request.headers.get("X-Streamer-Secret", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return _error(403, "FORBIDDEN", "Forbidden")
    event = _body(request)
    if not isinstance(event, dict):
        return _error(400, "INVALID_MESSAGE", "Body must be an API Gateway event")
    return JsonResponse(await handle_websocket_event(event))
