"""One base for the admin's live pages: records kept in DynamoDB, not in the ORM.

Each kind of record (live connections here, requests in ``streaming``) gets a list page
and a detail page, plain admin views wrapped by ``AdminSite.admin_view`` (staff only,
CSRF-protected) and rendered by templates that extend ``admin/live/change_list.html``
or ``admin/live/change_form.html`` (both extend ``admin/live/base.html``). This class
holds what the two kinds share: the URLs, the permission checks, the tenant/user
filters and forward cursor of the list, its 400/503 answers, the bulk-action checks,
loading the detail record and its "gone" and "storage down" answers. A subclass says
how to read a page, build a row, load a record and run an action.

Seeing needs the tenant view permission, acting needs tenant change (every action is a
POST); ``streaming/admin_site.py`` adds the URLs to the admin site.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from django.contrib import messages
from django.contrib.admin import AdminSite
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_http_methods

from connections.admin_support import (
    PAGE_SIZE,
    can_change,
    query_string,
    require_change,
    require_view,
    tenant_choices,
)
from storage.base import Page, now_ms
from storage.errors import NotFound, StoreError, ValidationError

RecordT = TypeVar("RecordT")
RefT = TypeVar("RefT")
T = TypeVar("T")


@dataclass(frozen=True)
class ListQuery:
    """The filters of a list page: tenant, user, the page's own (``extra``, in URL
    order) and the cursor of the page asked for."""

    tenant: str
    user: str
    extra: dict[str, str] = field(default_factory=dict)
    cursor: str | None = None

    def url(self, **changes: Any) -> str:
        """The query string of these filters with ``changes`` (no cursor unless given)."""
        return query_string(**{"tenant": self.tenant, "user": self.user, **self.extra, **changes})


def status_filter(query: ListQuery, statuses: Iterable[str]) -> dict[str, Any]:
    """Context of a list page's status filter (``query.extra["status"]``): the chosen
    status, every status, and the sidebar links ("All" first)."""
    status = query.extra["status"]
    values = list(statuses)
    return {
        "status": status,
        "statuses": values,
        "status_links": [{"label": "All", "url": query.url(status=""), "on": not status}]
        + [{"label": v, "url": query.url(status=v), "on": status == v} for v in values],
    }


def listed(
    load: Callable[[], Iterable[T]], row: Callable[[T], dict[str, Any]], what: str
) -> tuple[list[dict[str, Any]], str]:
    """Rows of a secondary list on a detail page (subscriptions, subscribers), or an
    error note when storage cannot list them: the page itself still shows."""
    try:
        items = list(load())
    except StoreError:
        return [], f"Storage is unavailable: {what} cannot be listed now."
    return [row(item) for item in items], ""


class LiveAdminViews(Generic[RecordT, RefT]):
    """The list and detail pages of one kind of DynamoDB record on one admin site."""

    #: URL names are ``admin:<url_name>_list`` and ``admin:<url_name>_detail``.
    url_name: ClassVar[str]
    #: URL of the list, below the admin root (the detail is ``<url_path><ref>/``).
    url_path: ClassVar[str]
    #: Title of the list page and name of the kind in messages ("connection").
    title: ClassVar[str]
    noun: ClassVar[str]
    #: Django app whose index is the breadcrumb above the list (None: none).
    app_label: ClassVar[str | None] = None
    body_class: ClassVar[str]
    list_template: ClassVar[str]
    detail_template: ClassVar[str]
    #: Bulk actions of the list: value → label.
    actions: ClassVar[dict[str, str]]
    #: Title of a detail page, and the warning when its record does not exist:
    #: ``str.format`` templates of ``ref`` (parsed, and as in the URL).
    detail_title: ClassVar[str]
    missing_text: ClassVar[str]

    def __init__(self, site: AdminSite) -> None:
        self.site = site

    def get_urls(self) -> list[URLPattern]:
        """The URL patterns of the list and the detail page (GET and POST only)."""

        def wrap(view: Any) -> Any:
            return self.site.admin_view(require_http_methods(["GET", "POST"])(view))

        return [
            path(self.url_path, wrap(self.list_view), name=f"{self.url_name}_list"),
            path(
                f"{self.url_path}<path:ref>/",
                wrap(self.detail_view),
                name=f"{self.url_name}_detail",
            ),
        ]

    def list_url(self, **params: Any) -> str:
        """The list page, with filters."""
        base = reverse(f"admin:{self.url_name}_list", current_app=self.site.name)
        return base + query_string(**params)

    def detail_url(self, ref: str) -> str:
        """A record's page (``ref`` as it appears in the URL)."""
        return reverse(f"admin:{self.url_name}_detail", args=[ref], current_app=self.site.name)

    def context(self, request: HttpRequest, title: str, **values: Any) -> dict[str, Any]:
        """What every live page's template gets: the admin's own context, the title,
        the body class, whether the user may act, and ``values``."""
        return {
            **self.site.each_context(request),
            "title": title,
            "subtitle": None,
            "body_class": self.body_class,
            "noun": self.noun,
            "can_change": can_change(request),
            **values,
        }

    def crumbs(self, *tail: tuple[str, str]) -> list[tuple[str, str]]:
        """Breadcrumbs (label, url; "" for the current page): Home, the app, then ``tail``."""
        head = [("Home", reverse("admin:index", current_app=self.site.name))]
        if self.app_label:
            url = reverse("admin:app_list", args=[self.app_label], current_app=self.site.name)
            head.append((self.app_label.capitalize(), url))
        return [*head, *tail]

    # --- list -------------------------------------------------------------------------

    def list_view(self, request: HttpRequest) -> HttpResponse:
        """One tenant's records (or one user's), a page at a time, with bulk actions."""
        require_view(request)
        if request.method == "POST":
            require_change(request)
            self._bulk(request)
            return HttpResponseRedirect(request.get_full_path())
        query = ListQuery(
            tenant=request.GET.get("tenant", "").strip(),
            user=request.GET.get("user", "").strip(),
            extra=self.list_filters(request),
            cursor=request.GET.get("cursor", "").strip() or None,
        )
        status, error = 200, ""
        rows: list[dict[str, Any]] = []
        next_url = ""
        if query.tenant:
            try:
                page = self.fetch_page(query)
            except ValidationError as exc:
                status, error = 400, f"Invalid filter: {exc}."
            except StoreError as exc:
                status, error = self.list_error(exc)
            else:
                rows = self.list_rows(page.items, query, now_ms())
                next_url = query.url(cursor=page.cursor) if page.cursor else ""
        listed_crumb = [(self.title, self.list_url()), (query.tenant, "")]
        context = self.context(
            request,
            self.title,
            subtitle=query.tenant or None,
            breadcrumbs=self.crumbs(*(listed_crumb if query.tenant else [(self.title, "")])),
            tenant=query.tenant,
            user_filter=query.user,
            tenants=tenant_choices(query.tenant),
            rows=rows,
            error=error,
            next_url=next_url,
            first_url=query.url() if query.cursor else "",
            actions=self.actions,
            # The table needs the page's width: the list pages go without the admin's
            # navigation sidebar (breadcrumbs and the filters remain).
            is_nav_sidebar_enabled=False,
            **self.list_context(query, error),
        )
        return TemplateResponse(request, self.list_template, context, status=status)

    def list_filters(self, request: HttpRequest) -> dict[str, str]:
        """The page's own filters from the query string (beyond tenant and user)."""
        raise NotImplementedError

    def fetch_page(self, query: ListQuery) -> Page[RecordT]:
        """One page of records (raises ValidationError for a bad filter, StoreError)."""
        raise NotImplementedError

    def list_rows(self, items: list[RecordT], query: ListQuery, now: int) -> list[dict[str, Any]]:
        """The table rows of a page; each has ``select`` (the value of its checkbox)
        and ``label`` (how the checkbox is announced)."""
        raise NotImplementedError

    def list_error(self, exc: StoreError) -> tuple[int, str]:
        """Status and message when storage failed to list."""
        return 503, f"Storage is unavailable: {self.noun}s cannot be listed now."

    def list_context(self, query: ListQuery, error: str) -> dict[str, Any]:
        """More context of the list page."""
        raise NotImplementedError

    def _bulk(self, request: HttpRequest) -> None:
        action = request.POST.get("action", "")
        selected = list(dict.fromkeys(v for v in request.POST.getlist("_selected") if v))
        if action not in self.actions:
            messages.warning(request, "Choose an action.")
            return
        if not selected:
            messages.warning(request, f"Select at least one {self.noun}.")
            return
        self.bulk_action(request, action, selected[:PAGE_SIZE])

    def bulk_action(self, request: HttpRequest, action: str, selected: list[str]) -> None:
        """Run a known ``action`` on the selected rows; the outcome as admin messages."""
        raise NotImplementedError

    # --- detail -----------------------------------------------------------------------

    def detail_view(self, request: HttpRequest, ref: str) -> HttpResponse:
        """One record, its related records, and its actions."""
        require_view(request)
        try:
            parsed = self.parse_ref(ref)
        except ValidationError:
            messages.warning(request, f"That is not a {self.noun} key.")
            return HttpResponseRedirect(self.list_url())
        if request.method == "POST":
            require_change(request)
            return self.detail_action(request, parsed)
        title = self.detail_title.format(ref=parsed)
        list_url = self.list_url(tenant=self.tenant_of(parsed))
        try:
            record = self.load(parsed)
        except (NotFound, ValidationError):
            messages.warning(request, self.missing_text.format(ref=ref))
            return HttpResponseRedirect(self.list_url(tenant=self.tenant_of(parsed)))
        except StoreError:
            error = f"Storage is unavailable: the {self.noun} cannot be read now."
            crumbs = self.crumbs((self.title, list_url), (title, ""))
            context = self.context(request, title, breadcrumbs=crumbs, error=error)
            return TemplateResponse(request, self.detail_template, context, status=503)
        values = self.detail_context(record, now_ms())
        status, more = self.detail_query(request, record)
        crumbs = self.crumbs((self.title, values["tenant_url"]), (title, ""))
        context = self.context(request, title, breadcrumbs=crumbs, object=record, **values, **more)
        return TemplateResponse(request, self.detail_template, context, status=status)

    def parse_ref(self, ref: str) -> RefT:
        """The record's reference from its URL part (ValidationError when malformed)."""
        raise NotImplementedError

    def tenant_of(self, ref: RefT) -> str:
        """The tenant a reference names ("" when it does not say)."""
        return ""

    def load(self, ref: RefT) -> RecordT:
        """The record (NotFound, ValidationError, StoreError)."""
        raise NotImplementedError

    def detail_context(self, record: RecordT, now: int) -> dict[str, Any]:
        """What the detail template shows of ``record`` (it gets ``object`` = the record
        too): ``object_id`` is shown first, ``tenant_url`` is the list of its tenant
        (also the breadcrumb back), ``user_url`` the list of its user."""
        raise NotImplementedError

    def detail_query(self, request: HttpRequest, record: RecordT) -> tuple[int, dict[str, Any]]:
        """The part of a detail page its query string chooses (e.g. a page of a
        request's output): the HTTP status (400 for a bad parameter) and more context."""
        return 200, {}

    def detail_action(self, request: HttpRequest, ref: RefT) -> HttpResponse:
        """Run the POSTed action on one record and redirect."""
        raise NotImplementedError
