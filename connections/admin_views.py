"""Live connections in the Django admin.

Connections live in DynamoDB, not in the ORM, so these are plain admin views (wrapped
by ``AdminSite.admin_view``: staff only, CSRF-protected) with templates that extend the
admin's own and look like a change list and a change form:

* list: one tenant's connections (optionally one user's), newest first, 50 a page with
  a forward cursor ("Next page"), sortable by connected / last seen within the page,
  and the bulk actions *disconnect* and *send a test frame*;
* detail: transport, address (channel name or API Gateway endpoint), user agent, IP,
  permissions, subscriptions, and the same two actions.

Seeing them needs the tenant view permission, acting needs tenant change; every action
is a POST and is written to Django's admin log. ``streaming/admin_site.py`` adds the
URLs to the admin site.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.admin import AdminSite
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.views.decorators.http import require_http_methods

from connections.admin_support import (
    ADMIN_DISCONNECT_CODE,
    MAX_TEST_TEXT,
    PAGE_SIZE,
    connection_counts,
    disconnect_connection,
    format_age,
    format_ms,
    log_admin_action,
    query_string,
    require_change,
    require_view,
    run,
    send_test_frame,
    tenant_choices,
)
from connections.publishing import PublishError
from connections.store.base import now_ms
from connections.store.connection import ConnectionInfo, connection_store
from connections.store.errors import NotFound, StoreError, ValidationError
from connections.store.subscription import subscription_store

LIST_TEMPLATE = "admin/connections/live/connection_list.html"
DETAIL_TEMPLATE = "admin/connections/live/connection_detail.html"
DEFAULT_TEXT = "Test message from the Streamer admin"

#: ``o`` parameter → (label, attribute) of the sortable columns.
SORTABLE = {"connected": ("Connected", "connected_at"), "last_seen": ("Last seen", "last_seen")}
DEFAULT_SORT = "-connected"

ACTIONS = {
    "disconnect": "Disconnect selected connections",
    "send": "Send a test frame to selected connections",
}


def _sort_key(value: str) -> str:
    return value if value.lstrip("-") in SORTABLE else DEFAULT_SORT


class ConnectionAdminViews:
    """The live connection pages of one admin site."""

    def __init__(self, site: AdminSite) -> None:
        self.site = site

    def get_urls(self) -> list[URLPattern]:
        """The URL patterns, named ``admin:connections_live_list`` and ``..._detail``."""

        def wrap(view: Any) -> Any:
            return self.site.admin_view(require_http_methods(["GET", "POST"])(view))

        return [
            path("live/connections/", wrap(self.list_view), name="connections_live_list"),
            path(
                "live/connections/<path:connection_id>/",
                wrap(self.detail_view),
                name="connections_live_detail",
            ),
        ]

    # --- urls -----------------------------------------------------------------------------

    def list_url(self, **params: Any) -> str:
        """The list page, with filters."""
        return reverse("admin:connections_live_list", current_app=self.site.name) + query_string(
            **params
        )

    def detail_url(self, connection_id: str) -> str:
        """A connection's page."""
        return reverse(
            "admin:connections_live_detail", args=[connection_id], current_app=self.site.name
        )

    # --- list -----------------------------------------------------------------------------

    def list_view(self, request: HttpRequest) -> HttpResponse:
        """One tenant's live connections (see the module docstring)."""
        require_view(request)
        if request.method == "POST":
            require_change(request)
            self._bulk_action(request)
            return HttpResponseRedirect(request.get_full_path())
        tenant = request.GET.get("tenant", "").strip()
        user = request.GET.get("user", "").strip()
        cursor = request.GET.get("cursor", "").strip() or None
        sort = _sort_key(request.GET.get("o", DEFAULT_SORT))
        now = now_ms()
        status = 200
        error = ""
        rows: list[dict[str, Any]] = []
        next_url = ""
        total: int | None = None
        if tenant:
            try:
                if user:
                    page = connection_store.list_by_user(
                        tenant, user, limit=PAGE_SIZE, cursor=cursor
                    )
                else:
                    page = connection_store.list_by_tenant(tenant, limit=PAGE_SIZE, cursor=cursor)
            except ValidationError as exc:
                status, error = 400, f"Invalid filter: {exc}."
            except StoreError:
                status, error = 503, "Storage is unavailable: connections cannot be listed now."
            else:
                attribute = SORTABLE[sort.lstrip("-")][1]
                items = sorted(
                    page.items, key=lambda i: getattr(i, attribute), reverse=sort.startswith("-")
                )
                rows = [self._row(info, now) for info in items]
                if page.cursor:
                    next_url = query_string(tenant=tenant, user=user, o=sort, cursor=page.cursor)
                total = connection_counts([tenant]).get(tenant)
        context = {
            **self.site.each_context(request),
            "title": "Live connections",
            "subtitle": tenant or None,
            "tenant": tenant,
            "user_filter": user,
            "tenants": tenant_choices(tenant),
            "rows": rows,
            "total": total,
            "error": error,
            "next_url": next_url,
            "first_url": query_string(tenant=tenant, user=user, o=sort) if cursor else "",
            "headers": self._headers(tenant, user, cursor, sort),
            "actions": ACTIONS,
            "can_change": request.user.has_perm("connections.change_tenant"),
            "max_text": MAX_TEST_TEXT,
            "default_text": DEFAULT_TEXT,
            "page_size": PAGE_SIZE,
        }
        return TemplateResponse(request, LIST_TEMPLATE, context, status=status)

    def _row(self, info: ConnectionInfo, now: int) -> dict[str, Any]:
        return {
            "info": info,
            "url": self.detail_url(info.connection_id),
            "user_url": query_string(tenant=info.tenant_id, user=info.user_id),
            "connected": format_ms(info.connected_at),
            "connected_age": format_age(info.connected_at, now),
            "last_seen": format_ms(info.last_seen),
            "last_seen_age": format_age(info.last_seen, now),
            "permissions": ", ".join(info.permissions),
        }

    @staticmethod
    def _headers(tenant: str, user: str, cursor: str | None, sort: str) -> list[dict[str, Any]]:
        headers = []
        for key, (label, _) in SORTABLE.items():
            current = sort.lstrip("-") == key
            descending = sort.startswith("-")
            # Clicking a sorted column flips it; another column starts descending.
            target = (key if descending else f"-{key}") if current else f"-{key}"
            headers.append(
                {
                    "key": key,
                    "label": label,
                    "url": query_string(tenant=tenant, user=user, cursor=cursor, o=target),
                    "sorted": ("descending" if descending else "ascending") if current else "",
                }
            )
        return headers

    def _bulk_action(self, request: HttpRequest) -> None:
        action = request.POST.get("action", "")
        ids = list(dict.fromkeys(i for i in request.POST.getlist("_selected") if i))[:PAGE_SIZE]
        if action not in ACTIONS:
            messages.warning(request, "Choose an action.")
            return
        if not ids:
            messages.warning(request, "Select at least one connection.")
            return
        if action == "disconnect":
            done = [cid for cid in ids if self._disconnect(request, cid)]
            verb = "Disconnected"
        else:
            text = self._text(request)
            if text is None:
                return
            done = [cid for cid in ids if self._send(request, cid, text)]
            verb = "Sent a test frame to"
        if done:
            messages.success(request, f"{verb} {len(done)} of {len(ids)} connection(s).")
        failed = [cid for cid in ids if cid not in done]
        if failed:
            messages.warning(
                request,
                f"Not reached (not registered any more, or the transport failed): "
                f"{', '.join(failed)}",
            )

    # --- detail ---------------------------------------------------------------------------

    def detail_view(self, request: HttpRequest, connection_id: str) -> HttpResponse:
        """One connection and its subscriptions (see the module docstring)."""
        require_view(request)
        if request.method == "POST":
            require_change(request)
            return self._detail_action(request, connection_id)
        try:
            info = connection_store.get(connection_id)
        except (NotFound, ValidationError):
            messages.warning(
                request, f"Connection {connection_id} is not registered (it may have closed)."
            )
            return HttpResponseRedirect(self.list_url())
        except StoreError:
            return self._unavailable(request, connection_id)
        subscriptions: list[dict[str, Any]] = []
        subscriptions_error = ""
        try:
            subs = subscription_store.list_by_connection(connection_id)
        except StoreError:
            subscriptions_error = "Storage is unavailable: subscriptions cannot be listed now."
        else:
            subscriptions = [
                {
                    "sub": sub,
                    "url": _request_url(sub.request_key, self.site.name),
                    "created": format_ms(sub.created_at),
                }
                for sub in subs
            ]
        now = now_ms()
        context = {
            **self.site.each_context(request),
            "title": f"Connection {connection_id}",
            "subtitle": None,
            "info": info,
            "row": self._row(info, now),
            "tenant_url": self.list_url(tenant=info.tenant_id),
            "user_url": self.list_url(tenant=info.tenant_id, user=info.user_id),
            "subscriptions": subscriptions,
            "subscriptions_error": subscriptions_error,
            "can_change": request.user.has_perm("connections.change_tenant"),
            "max_text": MAX_TEST_TEXT,
            "default_text": DEFAULT_TEXT,
        }
        return TemplateResponse(request, DETAIL_TEMPLATE, context)

    def _unavailable(self, request: HttpRequest, connection_id: str) -> HttpResponse:
        context = {
            **self.site.each_context(request),
            "title": f"Connection {connection_id}",
            "subtitle": None,
            "info": None,
            "error": "Storage is unavailable: the connection cannot be read now.",
        }
        return TemplateResponse(request, DETAIL_TEMPLATE, context, status=503)

    def _detail_action(self, request: HttpRequest, connection_id: str) -> HttpResponse:
        action = request.POST.get("action", "")
        tenant = request.POST.get("tenant", "").strip()
        if action == "disconnect":
            if self._disconnect(request, connection_id):
                messages.success(
                    request,
                    f"Connection {connection_id}: close {ADMIN_DISCONNECT_CODE} sent. "
                    "Its record goes away when the socket has closed.",
                )
            else:
                messages.warning(
                    request,
                    f"Connection {connection_id} was not disconnected: it is not registered "
                    "any more, or its transport failed.",
                )
            return HttpResponseRedirect(self.list_url(tenant=tenant))
        if action == "send":
            text = self._text(request)
            if text is not None:
                if self._send(request, connection_id, text):
                    messages.success(request, f"Test frame sent to connection {connection_id}.")
                else:
                    messages.warning(
                        request,
                        f"The test frame did not reach connection {connection_id}: it is not "
                        "registered any more, or its transport failed.",
                    )
            return HttpResponseRedirect(self.detail_url(connection_id))
        messages.error(request, "Unknown action.")
        return HttpResponseRedirect(self.detail_url(connection_id))

    # --- actions --------------------------------------------------------------------------

    @staticmethod
    def _text(request: HttpRequest) -> str | None:
        text = request.POST.get("text", "").strip() or DEFAULT_TEXT
        if len(text) > MAX_TEST_TEXT:
            messages.error(request, f"The test text is longer than {MAX_TEST_TEXT} characters.")
            return None
        return text

    @staticmethod
    def _disconnect(request: HttpRequest, connection_id: str) -> bool:
        try:
            done = run(disconnect_connection(connection_id))
        except (StoreError, ValidationError):
            done = False
        if done:
            log_admin_action(
                request,
                object_id=connection_id,
                object_repr=f"Connection {connection_id}",
                message=f"Disconnected (close code {ADMIN_DISCONNECT_CODE})",
            )
        return done

    @staticmethod
    def _send(request: HttpRequest, connection_id: str, text: str) -> bool:
        try:
            done = run(send_test_frame(connection_id, text))
        except (StoreError, ValidationError, PublishError):
            done = False
        if done:
            log_admin_action(
                request,
                object_id=connection_id,
                object_repr=f"Connection {connection_id}",
                message=f"Sent a test frame: {text[:100]}",
            )
        return done


def _request_url(request_key: str, site_name: str) -> str:
    """The admin page of a request, when the request pages are installed."""
    try:
        return reverse("admin:streaming_request_detail", args=[request_key], current_app=site_name)
    except NoReverseMatch:
        return ""
