"""Requests in the Django admin.

Requests live in DynamoDB, so, like the live connection pages, these are pages of
:class:`connections.admin_live.LiveAdminViews`:

* list: one tenant's requests, or one user's, optionally of one status, newest first,
  50 a page with a forward cursor, and the bulk actions *cancel* and *retry*;
* detail: payload, metadata, progress, result, error, attempts, lease, timings (queue
  wait, run time), origin and subscribers, a page of its stored output
  (``?after_seq=N`` / ``?before_seq=N``, :mod:`streaming.admin_output`), and the same two actions.

*Cancel* is exactly a client's ``request.cancel`` (:func:`lifecycle.cancel`); *retry*
sends a FAILED or CANCELLED request back to PENDING under the same id
(:func:`lifecycle.requeue`, semantics in docs/admin.md). Seeing needs the tenant view
permission, acting needs tenant change; each action is shown as an admin message and
written to Django's admin log.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from connections.admin_live import ListQuery, LiveAdminViews, listed, status_filter
from connections.admin_support import (
    PAGE_SIZE,
    format_age,
    format_duration,
    format_ms,
    log_admin_action,
    query_string,
    run,
)
from storage.base import Page
from storage.errors import (
    InvalidTransition,
    NotFound,
    StorageUnavailable,
    StoreError,
    ValidationError,
)
from storage.requests.model import FINAL, RequestKey, RequestRecord, RequestStatus
from storage.requests.store import request_store
from storage.subscription import subscription_store
from streaming import lifecycle
from streaming.admin_output import parse_seq, read_page

LIST_TEMPLATE = "admin/streaming/request_list.html"
DETAIL_TEMPLATE = "admin/streaming/request_detail.html"

ACTIONS = {
    "cancel": "Cancel selected requests",
    "retry": "Retry selected requests (failed or cancelled)",
}
RETRYABLE = frozenset({RequestStatus.FAILED, RequestStatus.CANCELLED})


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


class RequestAdminViews(LiveAdminViews[RequestRecord, RequestKey]):
    """The request pages of one admin site (the detail URL carries
    ``RequestKey.as_string()``)."""

    url_name = "streaming_request"
    url_path = "live/requests/"
    title = "Requests"
    noun = "request"
    body_class = "app-streaming model-request"
    list_template = LIST_TEMPLATE
    detail_template = DETAIL_TEMPLATE
    actions = ACTIONS
    detail_title = "Request {ref.request_id}"
    missing_text = "Request {ref} does not exist (records expire 7 days after they end)."

    # --- list -----------------------------------------------------------------------------

    def list_filters(self, request: HttpRequest) -> dict[str, str]:
        return {"status": request.GET.get("status", "").strip().upper()}

    def fetch_page(self, query: ListQuery) -> Page[RequestRecord]:
        status = query.extra["status"] or None
        if query.user:
            return request_store.list_by_user(
                query.tenant, query.user, status=status, limit=PAGE_SIZE, cursor=query.cursor
            )
        return request_store.list_by_tenant(
            query.tenant, status=status, limit=PAGE_SIZE, cursor=query.cursor
        )

    def list_error(self, exc: StoreError) -> tuple[int, str]:
        if isinstance(exc, StorageUnavailable):
            return super().list_error(exc)
        # DynamoDB rejected the query: typically a requests table made before the
        # by_tenant index existed (docs/admin.md, "Upgrading").
        return 500, (
            "Storage rejected the query: does the requests table have its by_tenant "
            "index? See docs/admin.md."
        )

    def list_rows(
        self, items: list[RequestRecord], query: ListQuery, now: int
    ) -> list[dict[str, Any]]:
        return [self._row(record, now) for record in items]

    def list_context(self, query: ListQuery, error: str) -> dict[str, Any]:
        return status_filter(query, [s.value for s in RequestStatus])

    def _row(self, record: RequestRecord, now: int) -> dict[str, Any]:
        return {
            "record": record,
            "key": record.key.as_string(),
            "select": record.key.as_string(),
            "label": record.request_id,
            "url": self.detail_url(record.key.as_string()),
            "user_url": query_string(tenant=record.tenant_id, user=record.user_id),
            "percentage": f"{record.percentage:g}",
            **timings(record, now),
        }

    def bulk_action(self, request: HttpRequest, action: str, selected: list[str]) -> None:
        for value in selected:
            try:
                key = RequestKey.from_string(value)
            except ValidationError:
                messages.error(request, f"Not a request key: {value}")
                continue
            self._act(request, action, key)

    # --- detail ---------------------------------------------------------------------------

    def parse_ref(self, ref: str) -> RequestKey:
        return RequestKey.from_string(ref)

    def tenant_of(self, ref: RequestKey) -> str:
        return ref.tenant_id

    def load(self, ref: RequestKey) -> RequestRecord:
        return request_store.get(ref)

    def detail_context(self, record: RequestRecord, now: int) -> dict[str, Any]:
        subscribers, subscribers_error = listed(
            lambda: subscription_store.list_by_request(record.key.as_string()),
            lambda sub: {"sub": sub, "url": _connection_url(sub.connection_id, self.site.name)},
            "subscribers",
        )
        return {
            "record": record,
            "object_id": record.request_id,
            "key": record.key.as_string(),
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
            "can_cancel": record.status not in FINAL,
            "can_retry": record.status in RETRYABLE,
        }

    def detail_query(
        self, request: HttpRequest, record: RequestRecord
    ) -> tuple[int, dict[str, Any]]:
        """The page of stored output that ``?after_seq=`` or ``?before_seq=`` asks for
        (400 unless it is a whole number >= 0; clamped to the stream)."""
        url = self.detail_url(record.key.as_string())
        try:
            after_seq = parse_seq("after_seq", request.GET.get("after_seq"))
            before_seq = parse_seq("before_seq", request.GET.get("before_seq"))
            if after_seq is not None and before_seq is not None:
                raise ValidationError("give after_seq or before_seq, not both")
        except ValidationError as exc:
            return 400, {"output_error": f"{exc}.", "output_url": url}
        page = read_page(
            record.key,
            record.output_seq,
            record.output_bytes,
            after_seq=after_seq,
            before_seq=before_seq,
        )
        return 200, {"output": page, "output_url": url}

    def detail_action(self, request: HttpRequest, ref: RequestKey) -> HttpResponse:
        action = request.POST.get("action", "")
        if action in ACTIONS:
            self._act(request, action, ref)
        else:
            messages.error(request, "Unknown action.")
        return HttpResponseRedirect(self.detail_url(ref.as_string()))

    # --- actions --------------------------------------------------------------------------

    def _act(self, request: HttpRequest, action: str, key: RequestKey) -> None:
        label = key.as_string()
        try:
            if action == "cancel":
                run(lifecycle.cancel(key))
                done = f"Request {label} cancelled; its subscribers got the CANCELLED error."
                logged = "Cancelled"
            else:
                run(lifecycle.requeue(key))
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
