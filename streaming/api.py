"""Who may call the back-end HTTP APIs, and the API Gateway events endpoint.

The ``/api/v1/`` endpoints (publish and the jobs API, :mod:`streaming.http_api`) take a
tenant API key; ``/apigw/events`` takes the shared secret. Each checks the caller from
the headers before the body is read and refuses bodies over
``STREAMER_MAX_HTTP_BODY_BYTES``: in front of Django by :mod:`streaming.body_guard`
(wired in ``streaming/asgi.py`` with the gates below), and again in the views for any
other way in (Django's test client, another ASGI entry point).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from connections.models import ApiKey
from protocol import codec
from streaming.apigw import handle_websocket_event
from streaming.bearer import PREFIX, same_secret
from streaming.body_guard import TOO_LARGE, Gate, Refusal

PUBLISH_PATH = "/api/v1/publish"
# The jobs API: POST /api/v1/requests and everything below /api/v1/requests/.
REQUESTS_PATHS = ("/api/v1/requests", "/api/v1/requests/")
APIGW_EVENTS_PATH = "/apigw/events"
API_KEY_SCOPE = "streamer.api_key"  # the key the body guard authenticated

NO_API_KEY = Refusal(401, "UNAUTHORIZED", "A valid API key is required")
FORBIDDEN = Refusal(403, "FORBIDDEN", "Forbidden")


async def authenticate_publisher(authorization: str) -> ApiKey | None:
    """The active key of an active tenant named by ``Authorization: Bearer``, or None."""
    secret = authorization[len(PREFIX) :].strip() if authorization.startswith(PREFIX) else ""
    key = await sync_to_async(ApiKey.authenticate)(secret) if secret else None
    return key if key is not None and key.tenant.active else None


async def publisher_gate(headers: Mapping[str, str], scope: dict[str, Any]) -> Refusal | None:
    """Body guard check of ``POST /api/v1/publish`` and the jobs API: a tenant API key."""
    key = await authenticate_publisher(headers.get("authorization", ""))
    if key is None:
        return NO_API_KEY
    scope[API_KEY_SCOPE] = key
    return None


def apigw_secret_ok(given: str) -> bool:
    """Whether ``X-Streamer-Secret`` is the configured shared secret (none: refuse)."""
    return same_secret(given, getattr(settings, "STREAMER_APIGW_SHARED_SECRET", ""))


async def apigw_gate(headers: Mapping[str, str], scope: dict[str, Any]) -> Refusal | None:
    """Body guard check of ``POST /apigw/events``: the shared secret."""
    return None if apigw_secret_ok(headers.get("x-streamer-secret", "")) else FORBIDDEN


GATES: dict[str, Gate] = {
    PUBLISH_PATH: publisher_gate,
    APIGW_EVENTS_PATH: apigw_gate,
    **dict.fromkeys(REQUESTS_PATHS, publisher_gate),
}


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _refuse(refusal: Refusal) -> JsonResponse:
    return _error(refusal.status, refusal.code, refusal.message)


def too_large(request: HttpRequest) -> bool:
    """Over the cap by the declared length (checked before the body is touched), or by
    the body read."""
    limit = settings.STREAMER_MAX_HTTP_BODY_BYTES
    declared = request.META.get("CONTENT_LENGTH") or "0"
    return (declared.isdigit() and int(declared) > limit) or len(request.body) > limit


def _body(request: HttpRequest) -> Any:
    try:
        return codec.loads(request.body)
    except ValueError:
        return None


@csrf_exempt
@require_POST
async def apigw_events_view(request: HttpRequest) -> JsonResponse:
    """``POST /apigw/events``: an API Gateway WebSocket event forwarded by an HTTP
    integration, authenticated by the ``X-Streamer-Secret`` header."""
    if not apigw_secret_ok(request.headers.get("X-Streamer-Secret", "")):
        return _refuse(FORBIDDEN)
    if too_large(request):
        return _refuse(TOO_LARGE)
    event = _body(request)
    if not isinstance(event, dict):
        return _error(400, "INVALID_MESSAGE", "Body must be an API Gateway event")
    return JsonResponse(await handle_websocket_event(event))
