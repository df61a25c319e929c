"""Webhook deliveries in the Django admin (pages of :class:`LiveAdminViews`):

* list: one tenant's deliveries (optionally one user's, one status), newest first, 50 a
  page with a forward cursor, and the bulk action *resend*;
* detail: the event, its body, its state and every attempt (time, HTTP status, error),
  and *resend*.

*Resend* makes a delivery PENDING and due now for another day, under the same
``webhook-id`` (``webhook_store.resend``); a sender POSTs it within a poll interval.
Seeing needs the tenant view permission, resending tenant change; each resend is an
admin message and a row of Django's admin log.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from connections.admin_live import ListQuery, LiveAdminViews, status_filter
from connections.admin_support import PAGE_SIZE, format_age, format_ms, log_admin_action
from storage.base import Page
from storage.errors import NotFound, StoreError, ValidationError
from storage.webhooks import Delivery, DeliveryStatus, webhook_store

ACTIONS = {"resend": "Resend selected deliveries (same webhook-id)"}


class WebhookAdminViews(LiveAdminViews[Delivery, str]):
    """The webhook delivery pages of one admin site (the detail URL carries the id)."""

    url_name = "connections_webhook"
    url_path = "live/webhooks/"
    title = "Webhook deliveries"
    noun = "delivery"
    body_class = "app-connections model-webhookdelivery"
    list_template = "admin/connections/webhooks/list.html"
    detail_template = "admin/connections/webhooks/detail.html"
    actions = ACTIONS
    detail_title = "Webhook {ref}"
    missing_text = "Webhook delivery {ref} does not exist (deliveries expire after 30 days)."

    def list_filters(self, request: HttpRequest) -> dict[str, str]:
        return {"status": request.GET.get("status", "").strip().upper()}

    def fetch_page(self, query: ListQuery) -> Page[Delivery]:
        status = query.extra["status"]
        if status and status not in DeliveryStatus.__members__:
            raise ValidationError(f"unknown status {status!r}")
        page = webhook_store.list_by_tenant(query.tenant, limit=PAGE_SIZE, cursor=query.cursor)
        # The user and status filters narrow the page read (a tenant's deliveries are
        # indexed by time only); the cursor still walks every delivery of the tenant.
        items = [
            d
            for d in page.items
            if (not query.user or d.user_id == query.user) and (not status or d.status == status)
        ]
        return Page(items, page.cursor)

    def list_rows(self, items: list[Delivery], query: ListQuery, now: int) -> list[dict[str, Any]]:
        return [
            {
                "delivery": d,
                "select": d.delivery_id,
                "label": d.delivery_id,
                "url": self.detail_url(d.delivery_id),
                "last": d.attempts[-1] if d.attempts else None,
                "created": format_ms(d.created_at),
                "created_age": format_age(d.created_at, now),
            }
            for d in items
        ]

    def list_context(self, query: ListQuery, error: str) -> dict[str, Any]:
        return status_filter(query, [s.value for s in DeliveryStatus])

    def bulk_action(self, request: HttpRequest, action: str, selected: list[str]) -> None:
        for delivery_id in selected:
            self._resend(request, delivery_id)

    def parse_ref(self, ref: str) -> str:
        if not ref.startswith("msg_") or len(ref) > 64:
            raise ValidationError("not a webhook id")
        return ref

    def load(self, ref: str) -> Delivery:
        return webhook_store.get(ref)

    def detail_context(self, record: Delivery, now: int) -> dict[str, Any]:
        return {
            "delivery": record,
            "object_id": record.delivery_id,
            "body": orjson.dumps(
                orjson.loads(record.body), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
            ).decode(),
            "attempts": [
                {"attempt": a, "at": format_ms(a.at), "age": format_age(a.at, now)}
                for a in reversed(record.attempts)
            ],
            "created": format_ms(record.created_at),
            "deadline": format_ms(record.deadline_at),
            "next_attempt": format_ms(record.next_attempt_at),
            "next_attempt_age": format_age(record.next_attempt_at, now),
            "tenant_url": self.list_url(tenant=record.tenant_id),
            "user_url": self.list_url(tenant=record.tenant_id, user=record.user_id),
        }

    def detail_action(self, request: HttpRequest, ref: str) -> HttpResponse:
        if request.POST.get("action", "") in ACTIONS:
            self._resend(request, ref)
        else:
            messages.error(request, "Unknown action.")
        return HttpResponseRedirect(self.detail_url(ref))

    def _resend(self, request: HttpRequest, delivery_id: str) -> None:
        try:
            webhook_store.resend(delivery_id)
        except NotFound:
            messages.error(request, f"Webhook delivery {delivery_id} does not exist.")
            return
        except ValidationError:
            messages.error(request, f"Not a webhook id: {delivery_id}")
            return
        except StoreError:
            messages.error(request, f"Webhook {delivery_id}: storage is unavailable; try again.")
            return
        log_admin_action(
            request,
            object_id=delivery_id,
            object_repr=f"Webhook {delivery_id}",
            message="Resent (PENDING, due now, same webhook-id)",
        )
        messages.success(request, f"Webhook {delivery_id} will be sent again (same webhook-id).")
