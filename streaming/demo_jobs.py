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

from protocol.errors import ErrorCode, ProtocolError
from storage.errors import StoreError
from streaming import lifecycle
from streaming.actions.report import ReportPayload
from streaming.views import DEMO_TENANT, DEMO_USER_COOKIE


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
    try:
        record = await lifecycle.enqueue(
            tenant_id=DEMO_TENANT,
            user_id=user,
            action="generate_report",
            payload=payload.model_dump(),
            request_id=f"srv-{uuid.uuid4().hex[:12]}",
        )
    except ProtocolError as exc:
        status = 429 if exc.code is ErrorCode.QUOTA_EXCEEDED else 400
        return JsonResponse({"error": exc.message}, status=status)
    except StoreError:
        return JsonResponse({"error": "storage unavailable"}, status=503)
    return JsonResponse({"request_id": record.request_id}, status=202)
