"""DEBUG only: start a report for the demo page's own user from server code, the way a
project's view would, so the page can show that ``request.watch`` follows requests it
did not send (``POST /dev/start-report``; 404 when DEBUG is off).

The user is the one of the page's development token (its signed cookie, set by
``/dev/token``); the cookie is ``SameSite=Lax``, so another site cannot post here as that
user, which is why this view needs no CSRF token.
"""

from __future__ import annotations

import uuid

import orjson
from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from connections.storage_pool import run_storage
from connections.tenants import get_tenant_policy
from storage.errors import StoreError
from storage.requests.quota import QuotaExceeded, QuotaLimits
from storage.requests.store import request_store
from streaming.actions.report import ReportPayload
from streaming.queue import wake_worker
from streaming.views import DEMO_TENANT, DEMO_USER_COOKIE
from streaming.watchers import announce_request


@csrf_exempt
@require_POST
async def dev_start_report(request: HttpRequest) -> JsonResponse:
    """Enqueue ``generate_report`` (``{"duration_s"?}``) for the page's user; 202 +
    ``{"request_id"}``, 400 for a bad body or no development token yet, 429 when the
    user's quota is full, 503 when storage is down."""
    if not settings.DEBUG:
        raise Http404("not found")
    user = request.get_signed_cookie(DEMO_USER_COOKIE, default=None, salt=DEMO_USER_COOKIE)
    if user is None:
        return JsonResponse({"error": "get a development token first (/dev/token)"}, status=400)
    try:
        body = orjson.loads(request.body or b"{}")
        duration = float(body.get("duration_s", 3)) if isinstance(body, dict) else -1.0
        payload = ReportPayload(duration_s=duration, steps=max(1, min(100, int(duration * 4))))
    except (ValueError, TypeError, orjson.JSONDecodeError):
        return JsonResponse({"error": "duration_s: a number of seconds from 0 to 600"}, status=400)
    policy = await run_storage(get_tenant_policy, DEMO_TENANT)
    limits = None
    if policy is not None:
        limits = QuotaLimits(
            per_user=policy.max_active_requests_per_user, per_tenant=policy.max_active_requests
        )
    try:
        record = await run_storage(
            request_store.enqueue,
            tenant_id=DEMO_TENANT,
            user_id=user,
            request_id=f"srv-{uuid.uuid4().hex[:12]}",
            action="generate_report",
            payload=payload.model_dump(),
            limits=limits,
        )
    except QuotaExceeded:
        return JsonResponse({"error": "too many active requests"}, status=429)
    except StoreError:
        return JsonResponse({"error": "storage unavailable"}, status=503)
    await announce_request(record)
    await wake_worker(record.key.as_string())
    return JsonResponse({"request_id": record.request_id}, status=202)
