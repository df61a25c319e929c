"""Requests in the Django admin.

Requests live in DynamoDB, so, like the live connection pages, these are plain admin
views (staff only, CSRF-protected, templates extending the admin's own):

* list: one tenant's requests, or one user's, optionally of one status, newest first,
  50 a page with a forward cursor, and the bulk actions *cancel* and *retry*;
* detail: payload, metadata, progress, result, error, attempts, lease, timings (queue
  wait, run time), origin and subscribers, and the same two actions.

*Cancel* is exactly a client's ``request.cancel`` (:func:`cancel_request`); *retry*
sends a FAILED or CANCELLED request back to PENDING under the same id
(:func:`requeue_request`, semantics in docs/admin.md). Seeing needs the tenant view
permission, acting needs tenant change; each action is shown as an admin message and
written to Django's admin log.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from django.conf import settings
from django.contrib import messages
from django.contrib.admin import AdminSite
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_http_methods

from connections.admin_support import (
    PAGE_SIZE,
    format_age,
    format_duration,
    format_ms,
    log_admin_action,
    query_string,
    require_change,
    require_view,
    run,
    tenant_choices,
)
from connections.store.base import now_ms
from connections.store.errors import (
    InvalidTransition,
    NotFound,
    StorageUnavailable,
    StoreError,
    ValidationError,
)
from connections.store.subscription import subscription_store
from streaming.actions.builtin import cancel_request
from streaming.queue import wake_worker
from streaming.requests.model import FINAL, RequestKey, RequestRecord, RequestStatus
from streaming.requests.store import request_store

LIST_TEMPLATE = "admin/streaming/request_list.html"
DETAIL_TEMPLATE = "admin/streaming/request_detail.html"

ACTIONS = {
    "cancel": "Cancel selected requests",
    "retry": "Retry selected requests (failed or cancelled)",
}
RETRYABLE = frozenset({RequestStatus.FAILED, RequestStatus.CANCELLED})


async def requeue_request(key: RequestKey) -> RequestRecord:
    """Run a FAILED or CANCELLED request again under the same id (``request_store.requeue``)
    and nudge a worker. Raises NotFound, or InvalidTransition when it is not FAILED or
    CANCELLED."""
    record = await asyncio.to_thread(
        request_store.requeue, key, shards=settings.STREAMER_QUEUE_SHARDS
    )
    await wake_worker(key.as_string())
    return record


def _json(value: Any) -> str:
    if value is None:
        return ""
    # Stored values came from JSON, so they always encode again.
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def timings(record: RequestRecord, now: int) -> dict[str, str]:
    """Readable timings of a request: queue wait (from creation, or from the admin's
    last retry, to the start of its current run; still growing while it waits), run
    time, total."""
    queued_at = record.requeued_at or record.created_at
    if record.started_at is not None:
        wait: int | None = record.started_at - queued_at
    elif record.status in FINAL:
        wait = None  # ended (cancelled) before it ever started
    else:
        wait = now - queued_at
    run_ms = None
    if record.started_at is not None:
        run_ms = (record.ended_at or now) - record.started_at
    return {
        "created": format_ms(record.created_at),
        "created_age": format_age(record.created_at, now),
        "requeued": format_ms(record.requeued_at),
        "started": format_ms(record.started_at),
        "ended": format_ms(record.ended_at),
        "queue_wait": format_duration(wait),
        "run_time": format_duration(run_ms),
        "total": format_duration((record.ended_at or now) - record.created_at),
        "lease_expires": format_ms(record.lease_expires_at),
        "lease_expires_age": format_age(record.lease_expires_at, now),
        "due": format_ms(record.due_at),
        "due_age": format_age(record.due_at, now),
        "expires": format_ms(record.ttl * 1000) if record.ttl is not None else "",
    }


class RequestAdminViews:
    """The request pages of one admin site."""

    def __init__(self, site: AdminSite) -> None:
        self.site = site

    def get_urls(self) -> list[URLPattern]:
        """URL patterns named ``admin:streaming_request_list`` and ``..._detail`` (the
        detail URL carries ``RequestKey.as_string()``)."""

        def wrap(view: Any) -> Any:
            return self.site.admin_view(require_http_methods(["GET", "POST"])(view))

        return [
            path("live/requests/", wrap(self.list_view), name="streaming_request_list"),
            path(
                "live/requests/<path:key>/", wrap(self.detail_view), name="streaming_request_detail"
            ),
        ]

    def list_url(self, **params: Any) -> str:
        """The list page, with filters."""
        base = reverse("admin:streaming_request_list", current_app=self.site.name)
        return base + query_string(**params)

    def detail_url(self, key: RequestKey) -> str:
        """A request's page."""
        return reverse(
            "admin:streaming_request_detail", args=[key.as_string()], current_app=self.site.name
        )

    # --- list -----------------------------------------------------------------------------

    def list_view(self, request: HttpRequest) -> HttpResponse:
        """A tenant's (or a user's) requests, newest first (see the module docstring)."""
        require_view(request)
        if request.method == "POST":
            require_change(request)
            self._bulk_action(request)
            return HttpResponseRedirect(request.get_full_path())
        tenant = request.GET.get("tenant", "").strip()
        user = request.GET.get("user", "").strip()
        status = request.GET.get("status", "").strip().upper()
        cursor = request.GET.get("cursor", "").strip() or None
        now = now_ms()
        code = 200
        error = ""
        rows: list[dict[str, Any]] = []
        next_url = ""
        if tenant:
            try:
                if user:
                    page = request_store.list_by_user(
                        tenant, user, status=status or None, limit=PAGE_SIZE, cursor=cursor
                    )
                else:
                    page = request_store.list_by_tenant(
                        tenant, status=status or None, limit=PAGE_SIZE, cursor=cursor
                    )
            except ValidationError as exc:
                code, error = 400, f"Invalid filter: {exc}."
            except StorageUnavailable:
                code, error = 503, "Storage is unavailable: requests cannot be listed now."
            except StoreError:
                # DynamoDB rejected the query: typically a requests table made before the
                # by_tenant index existed (docs/admin.md, "Upgrading").
                code, error = (
                    500,
                    (
                        "Storage rejected the query: does the requests table have its by_tenant "
                        "index? See docs/admin.md."
                    ),
                )
            else:
                rows = [self._row(record, now) for record in page.items]
                if page.cursor:
                    next_url = query_string(
                        tenant=tenant, user=user, status=status, cursor=page.cursor
                    )
        context = {
            **self.site.each_context(request),
            "title": "Requests",
            "subtitle": tenant or None,
            "tenant": tenant,
            "user_filter": user,
            "status": status,
            "statuses": [s.value for s in RequestStatus],
            "status_links": [
                {"label": "All", "url": query_string(tenant=tenant, user=user), "on": not status}
            ]
            + [
                {
                    "label": s.value,
                    "url": query_string(tenant=tenant, user=user, status=s.value),
                    "on": status == s.value,
                }
                for s in RequestStatus
            ],
            "tenants": tenant_choices(tenant),
            "rows": rows,
            "error": error,
            "next_url": next_url,
            "first_url": query_string(tenant=tenant, user=user, status=status) if cursor else "",
            "actions": ACTIONS,
            "can_change": request.user.has_perm("connections.change_tenant"),
        }
        return TemplateResponse(request, LIST_TEMPLATE, context, status=code)

    def _row(self, record: RequestRecord, now: int) -> dict[str, Any]:
        times = timings(record, now)
        return {
            "record": record,
            "key": record.key.as_string(),
            "url": self.detail_url(record.key),
            "user_url": query_string(tenant=record.tenant_id, user=record.user_id),
            "percentage": f"{record.percentage:g}",
            **times,
        }

    def _bulk_action(self, request: HttpRequest) -> None:
        action = request.POST.get("action", "")
        selected = list(dict.fromkeys(k for k in request.POST.getlist("_selected") if k))
        if action not in ACTIONS:
            messages.warning(request, "Choose an action.")
            return
        if not selected:
            messages.warning(request, "Select at least one request.")
            return
        for value in selected[:PAGE_SIZE]:
            try:
                key = RequestKey.from_string(value)
            except ValidationError:
                messages.error(request, f"Not a request key: {value}")
                continue
            self._act(request, action, key)

    # --- detail ---------------------------------------------------------------------------

    def detail_view(self, request: HttpRequest, key: str) -> HttpResponse:
        """One request (see the module docstring)."""
        require_view(request)
        try:
            parsed = RequestKey.from_string(key)
        except ValidationError:
            messages.warning(request, "That is not a request key.")
            return HttpResponseRedirect(self.list_url())
        if request.method == "POST":
            require_change(request)
            action = request.POST.get("action", "")
            if action in ACTIONS:
                self._act(request, action, parsed)
            else:
                messages.error(request, "Unknown action.")
            return HttpResponseRedirect(self.detail_url(parsed))
        try:
            record = request_store.get(parsed)
        except (NotFound, ValidationError):
            messages.warning(
                request, f"Request {key} does not exist (records expire 7 days after they end)."
            )
            return HttpResponseRedirect(self.list_url(tenant=parsed.tenant_id))
        except StoreError:
            context = {
                **self.site.each_context(request),
                "title": f"Request {parsed.request_id}",
                "subtitle": None,
                "record": None,
                "error": "Storage is unavailable: the request cannot be read now.",
            }
            return TemplateResponse(request, DETAIL_TEMPLATE, context, status=503)
        subscribers: list[dict[str, Any]] = []
        subscribers_error = ""
        try:
            subs = subscription_store.list_by_request(parsed.as_string())
        except StoreError:
            subscribers_error = "Storage is unavailable: subscribers cannot be listed now."
        else:
            subscribers = [
                {"sub": sub, "url": _connection_url(sub.connection_id, self.site.name)}
                for sub in subs
            ]
        now = now_ms()
        context = {
            **self.site.each_context(request),
            "title": f"Request {record.request_id}",
            "subtitle": None,
            "record": record,
            "key": parsed.as_string(),
            "times": timings(record, now),
            "payload": _json(record.payload),
            "metadata": _json(record.metadata),
            "details": _json(record.details),
            "result": _json(record.result),
            "error_value": _json(record.error),
            "percentage": f"{record.percentage:g}",
            "tenant_url": self.list_url(tenant=record.tenant_id),
            "user_url": self.list_url(tenant=record.tenant_id, user=record.user_id),
            "origin_url": _connection_url(record.connection_id, self.site.name)
            if record.connection_id
            else "",
            "subscribers": subscribers,
            "subscribers_error": subscribers_error,
            "can_change": request.user.has_perm("connections.change_tenant"),
            "can_cancel": record.status not in FINAL,
            "can_retry": record.status in RETRYABLE,
        }
        return TemplateResponse(request, DETAIL_TEMPLATE, context)

    # --- actions --------------------------------------------------------------------------

    def _act(self, request: HttpRequest, action: str, key: RequestKey) -> None:
        label = key.as_string()
        try:
            if action == "cancel":
                run(cancel_request(key))
                done = f"Request {label} cancelled; its subscribers got the CANCELLED error."
                logged = "Cancelled"
            else:
                run(requeue_request(key))
                done = f"Request {label} sent back to PENDING (retry under the same id)."
                logged = "Retried: FAILED/CANCELLED → PENDING, attempts reset"
        except NotFound:
            messages.error(request, f"Request {label} does not exist.")
            return
        except InvalidTransition as exc:
            if action == "cancel":
                why = f"it has already ended ({exc.current_status})"
            else:
                why = (
                    f"only FAILED or CANCELLED requests can be retried; it is {exc.current_status}"
                )
            messages.warning(request, f"Request {label} was not changed: {why}.")
            return
        except ValidationError as exc:
            messages.error(request, f"Request {label}: {exc}.")
            return
        except StoreError:
            messages.error(
                request, f"Request {label}: storage is unavailable; reload to see its status."
            )
            return
        log_admin_action(request, object_id=label, object_repr=f"Request {label}", message=logged)
        messages.success(request, done)


def _connection_url(connection_id: str, site_name: str) -> str:
    return reverse("admin:connections_live_detail", args=[connection_id], current_app=site_name)
