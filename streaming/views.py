"""Plain HTTP endpoints: health, metrics and the demo page."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import uuid

from channels.layers import get_channel_layer
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connections.storage_pool import run_storage
from storage.connection import connection_store
from storage.errors import NotFound, StoreError
from streaming.auth import issue_token
from streaming.bearer import bearer_token, same_secret

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
    storage = await run_storage(_storage_ok)
    layer = await _layer_ok()
    ok = storage and layer
    body = {
        "status": "ok" if ok else "unavailable",
        "checks": {
            "storage": "ok" if storage else "fail",
            "channel_layer": "ok" if layer else "fail",
        },
    }
    return JsonResponse(body, status=200 if ok else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format. With ``STREAMER_METRICS_TOKEN`` set, only for
    ``Authorization: Bearer <that token>`` (401 otherwise): the numbers tell an outsider
    about load and tenants' activity. Unset: open, for a scraper on a private network."""
    expected = settings.STREAMER_METRICS_TOKEN
    if expected and not same_secret(bearer_token(request), expected):
        response = HttpResponse("A valid metrics token is required", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


DEMO_TENANT = "demo"
DEMO_USER_COOKIE = "streamer_demo_user"
DEMO_TOKEN_TTL_S = 3600
_DEMO_USER_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def index(request: HttpRequest) -> HttpResponse:
    """The demo page for end users (streaming/templates/streaming/index.html)."""
    config = {
        "wsPath": "/ws",
        # Only the development stack hands out tokens; elsewhere the page asks for one.
        "devTokenUrl": reverse("dev-token") if settings.DEBUG else None,
        # Starts a report from server code; the page follows it through request.watch.
        "serverReportUrl": reverse("dev-start-report") if settings.DEBUG else None,
    }
    return render(request, "streaming/index.html", {"config": config})


@never_cache
def dev_token(request: HttpRequest) -> JsonResponse:
    """DEBUG only: a development token for the ``demo`` tenant, so the demo page can
    fill its token field. The user id comes from ``?user=`` or a signed cookie that keeps
    one random id per browser; 404 when DEBUG is off."""
    if not settings.DEBUG:
        raise Http404("not found")
    user = request.GET.get("user") or request.get_signed_cookie(
        DEMO_USER_COOKIE, default=None, salt=DEMO_USER_COOKIE
    )
    if user is None:
        user = f"demo-{secrets.token_hex(4)}"
    if not _DEMO_USER_RE.match(user):
        return JsonResponse(
            {"error": "user: 1-64 characters of letters, digits, '.', '_' or '-'"}, status=400
        )
    try:
        token = issue_token(DEMO_TENANT, user, (), DEMO_TOKEN_TTL_S)
    except ValueError:
        return JsonResponse({"error": "token issuing is not configured"}, status=503)
    response = JsonResponse(
        {
            "token": token,
            "tenant_id": DEMO_TENANT,
            "user_id": user,
            "expires_in": DEMO_TOKEN_TTL_S,
        }
    )
    response.set_signed_cookie(
        DEMO_USER_COOKIE, user, salt=DEMO_USER_COOKIE, httponly=True, samesite="Lax"
    )
    return response
