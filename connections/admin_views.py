"""Live connections in the Django admin (pages of :class:`LiveAdminViews`):

* list: one tenant's connections (optionally one user's), newest first, 50 a page with
  a forward cursor ("Next page"), sortable by connected / last seen within the page,
  and the bulk actions *disconnect* and *send a test frame*; before a tenant is chosen,
  the tenants with their live counts;
* detail: transport, address (channel name or API Gateway endpoint), user agent, IP,
  permissions, subscriptions, and the same two actions.

Every action is written to Django's admin log.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import NoReverseMatch, reverse

from connections.admin_live import ListQuery, LiveAdminViews, listed
from connections.admin_support import (
    ADMIN_DISCONNECT_CODE,
    MAX_COUNTED_TENANTS,
    MAX_TEST_TEXT,
    PAGE_SIZE,
    connection_counts,
    disconnect_connection,
    format_age,
    format_ms,
    log_admin_action,
    query_string,
    run,
    send_test_frame,
)
from connections.models import Tenant
from connections.publishing import PublishError
from storage.base import Page
from storage.connection import ConnectionInfo, connection_store
from storage.errors import StoreError, ValidationError
from storage.subscription import Subscription, subscription_store

DEFAULT_TEXT = "Test message from the Streamer admin"

#: ``o`` parameter → (label, attribute) of the sortable columns.
SORTABLE = {"connected": ("Connected", "connected_at"), "last_seen": ("Last seen", "last_seen")}
DEFAULT_SORT = "-connected"


def _sort_key(value: str) -> str:
    return value if value.lstrip("-") in SORTABLE else DEFAULT_SORT


class ConnectionAdminViews(LiveAdminViews[ConnectionInfo, str]):
    """The live connection pages of one admin site."""

    url_name = "connections_live"
    url_path = "live/connections/"
    title = "Live connections"
    noun = "connection"
    app_label = "connections"
    body_class = "app-connections model-liveconnection"
    list_template = "admin/connections/live/connection_list.html"
    detail_template = "admin/connections/live/connection_detail.html"
    actions = {
        "disconnect": "Disconnect selected connections",
        "send": "Send a test frame to selected connections",
    }
    detail_title = "Connection {ref}"
    missing_text = "Connection {ref} is not registered (it may have closed)."

    # --- list -------------------------------------------------------------------------

    def list_filters(self, request: HttpRequest) -> dict[str, str]:
        return {"o": _sort_key(request.GET.get("o", DEFAULT_SORT))}

    def fetch_page(self, query: ListQuery) -> Page[ConnectionInfo]:
        if query.user:
            return connection_store.list_by_user(
                query.tenant, query.user, limit=PAGE_SIZE, cursor=query.cursor
            )
        return connection_store.list_by_tenant(query.tenant, limit=PAGE_SIZE, cursor=query.cursor)

    def list_rows(
        self, items: list[ConnectionInfo], query: ListQuery, now: int
    ) -> list[dict[str, Any]]:
        sort = query.extra["o"]
        attribute = SORTABLE[sort.lstrip("-")][1]
        ordered = sorted(items, key=lambda i: getattr(i, attribute), reverse=sort.startswith("-"))
        return [self._row(info, now) for info in ordered]

    def list_context(self, query: ListQuery, error: str) -> dict[str, Any]:
        total = None
        if query.tenant and not error:
            total = connection_counts([query.tenant]).get(query.tenant)
        return {
            "total": total,
            "headers": self._headers(query),
            "tenant_overview": [] if query.tenant else self._overview(),
            "max_text": MAX_TEST_TEXT,
            "default_text": DEFAULT_TEXT,
            "page_size": PAGE_SIZE,
        }

    def _row(self, info: ConnectionInfo, now: int) -> dict[str, Any]:
        return {
            "info": info,
            "select": info.connection_id,
            "label": info.connection_id,
            "url": self.detail_url(info.connection_id),
            "user_url": query_string(tenant=info.tenant_id, user=info.user_id),
            "connected": format_ms(info.connected_at),
            "connected_age": format_age(info.connected_at, now),
            "last_seen": format_ms(info.last_seen),
            "last_seen_age": format_age(info.last_seen, now),
            "permissions": ", ".join(info.permissions),
        }

    @staticmethod
    def _headers(query: ListQuery) -> list[dict[str, Any]]:
        sort = query.extra["o"]
        descending = sort.startswith("-")
        headers = []
        for key, (label, _) in SORTABLE.items():
            current = sort.lstrip("-") == key
            # Clicking a sorted column flips it; another column starts descending.
            target = (key if descending else f"-{key}") if current else f"-{key}"
            headers.append(
                {
                    "key": key,
                    "label": label,
                    "url": query.url(o=target, cursor=query.cursor),
                    "sorted": ("descending" if descending else "ascending") if current else "",
                }
            )
        return headers

    @staticmethod
    def _overview() -> dict[str, Any]:
        """The tenants with their live counts (one cached index count each), most
        connections first: where to look before a tenant is chosen."""
        tenants = list(Tenant.objects.order_by("id")[: MAX_COUNTED_TENANTS + 1])
        shown = tenants[:MAX_COUNTED_TENANTS]
        counts = connection_counts(t.id for t in shown)
        shown.sort(key=lambda t: (counts[t.id] is None, -(counts[t.id] or 0), t.id))
        rows = [
            {"tenant": t, "live": counts[t.id], "url": query_string(tenant=t.id)} for t in shown
        ]
        return {"rows": rows, "more": len(tenants) > len(shown)}

    def bulk_action(self, request: HttpRequest, action: str, selected: list[str]) -> None:
        if action == "disconnect":
            done = [cid for cid in selected if self._disconnect(request, cid)]
            verb = "Disconnected"
        else:
            text = self._text(request)
            if text is None:
                return
            done = [cid for cid in selected if self._send(request, cid, text)]
            verb = "Sent a test frame to"
        if done:
            messages.success(request, f"{verb} {len(done)} of {len(selected)} connection(s).")
        failed = [cid for cid in selected if cid not in done]
        if failed:
            messages.warning(
                request,
                f"Not reached (not registered any more, or the transport failed): "
                f"{', '.join(failed)}",
            )

    # --- detail -----------------------------------------------------------------------

    def parse_ref(self, ref: str) -> str:
        return ref

    def load(self, ref: str) -> ConnectionInfo:
        return connection_store.get(ref)

    def detail_context(self, record: ConnectionInfo, now: int) -> dict[str, Any]:
        def row(sub: Subscription) -> dict[str, Any]:
            url = _request_url(sub.request_key, self.site.name)
            return {"sub": sub, "url": url, "created": format_ms(sub.created_at)}

        subscriptions, subscriptions_error = listed(
            lambda: subscription_store.list_by_connection(record.connection_id),
            row,
            "subscriptions",
        )
        return {
            "info": record,
            "object_id": record.connection_id,
            "row": self._row(record, now),
            "tenant_url": self.list_url(tenant=record.tenant_id),
            "user_url": self.list_url(tenant=record.tenant_id, user=record.user_id),
            "subscriptions": subscriptions,
            "subscriptions_error": subscriptions_error,
            "max_text": MAX_TEST_TEXT,
            "default_text": DEFAULT_TEXT,
        }

    def detail_action(self, request: HttpRequest, ref: str) -> HttpResponse:
        action = request.POST.get("action", "")
        if action == "disconnect":
            if self._disconnect(request, ref):
                messages.success(
                    request,
                    f"Connection {ref}: close {ADMIN_DISCONNECT_CODE} sent. "
                    "Its record goes away when the socket has closed.",
                )
            else:
                messages.warning(
                    request,
                    f"Connection {ref} was not disconnected: it is not registered "
                    "any more, or its transport failed.",
                )
            tenant = request.POST.get("tenant", "").strip()
            return HttpResponseRedirect(self.list_url(tenant=tenant))
        if action == "send":
            text = self._text(request)
            if text is not None:
                if self._send(request, ref, text):
                    messages.success(request, f"Test frame sent to connection {ref}.")
                else:
                    messages.warning(
                        request,
                        f"The test frame did not reach connection {ref}: it is not "
                        "registered any more, or its transport failed.",
                    )
            return HttpResponseRedirect(self.detail_url(ref))
        messages.error(request, "Unknown action.")
        return HttpResponseRedirect(self.detail_url(ref))

    # --- actions ----------------------------------------------------------------------

    @staticmethod
    def _text(request: HttpRequest) -> str | None:
        text = request.POST.get("text", "").strip() or DEFAULT_TEXT
        if len(text) > MAX_TEST_TEXT:
            messages.error(request, f"The test text is longer than {MAX_TEST_TEXT} characters.")
            return None
        return text

    @staticmethod
    def _disconnect(request: HttpRequest, connection_id: str) -> bool:
        message = f"Disconnected (close code {ADMIN_DISCONNECT_CODE})"
        return _logged(request, connection_id, disconnect_connection(connection_id), message)

    @staticmethod
    def _send(request: HttpRequest, connection_id: str, text: str) -> bool:
        message = f"Sent a test frame: {text[:100]}"
        return _logged(request, connection_id, send_test_frame(connection_id, text), message)


def _logged(
    request: HttpRequest, connection_id: str, operation: Awaitable[bool], message: str
) -> bool:
    """Run an action on one connection; when it reached the socket, log ``message``."""
    try:
        done = run(operation)
    except (StoreError, ValidationError, PublishError):
        done = False
    if done:
        log_admin_action(
            request,
            object_id=connection_id,
            object_repr=f"Connection {connection_id}",
            message=message,
        )
    return done


def _request_url(request_key: str, site_name: str) -> str:
    """The admin page of a request, when the request pages are installed."""
    try:
        return reverse("admin:streaming_request_detail", args=[request_key], current_app=site_name)
    except NoReverseMatch:
        return ""
