"""Tenants and their API keys in the Django admin.

* Tenants: search, filters, limits, a live connection count per row (DynamoDB, counted
  for the whole page at once and cached 10 s), and enable/disable. Disabling (the action
  or unticking *active*) also closes the tenant's live connections with 4403.
* API keys for the publish API: created from the tenant list (action) or the key form,
  the secret shown once, in the page that answers the creation (never in a message: the
  default message storage is a cookie), and only its hash stored; revoked by action.

Every change is written to Django's admin log.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html

from connections.admin_support import (
    CloseReport,
    close_tenant_connections,
    connection_counts,
    query_string,
    run,
)
from connections.models import ApiKey, Tenant


def new_keys_page(
    request: HttpRequest, site: admin.AdminSite, keys: list[tuple[ApiKey, str]]
) -> HttpResponse:
    """The one page that shows new keys' secrets: rendered into this response only (no
    message, no cookie, no cache), so the secret never travels or rests anywhere else."""
    context = {**site.each_context(request), "title": "New API keys", "keys": keys}
    response = TemplateResponse(request, "admin/connections/apikey/created.html", context)
    add_never_cache_headers(response)
    return response


class LimitFilter(admin.SimpleListFilter):
    """Tenants with or without a connection limit / a custom rate limit."""

    title = "limits"
    parameter_name = "limits"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("unlimited", "No connection limit"),
            ("limited", "With a connection limit"),
            ("custom_rate", "Custom rate limit"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> QuerySet[Tenant]:
        value = self.value()
        if value == "unlimited":
            return queryset.filter(max_connections=0)
        if value == "limited":
            return queryset.filter(max_connections__gt=0)
        if value == "custom_rate":
            return queryset.exclude(rate_limit_frames=None, rate_limit_window_s=None)
        return queryset


class ApiKeyInline(admin.TabularInline):
    """A tenant's keys, read-only (create and revoke with the actions)."""

    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("key_prefix", "name", "created_at", "revoked_at")
    readonly_fields = ("key_prefix", "name", "created_at", "revoked_at")
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="key")
    def key_prefix(self, obj: ApiKey) -> str:
        return str(obj)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "name",
        "active",
        "live_connections",
        "max_connections",
        "rate_limit_frames",
        "rate_limit_window_s",
        "created_at",
    )
    list_filter = ("active", LimitFilter)
    search_fields = ("id", "name")
    list_per_page = 50
    actions = ("enable_tenants", "disable_tenants", "create_api_key")
    inlines = (ApiKeyInline,)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = ("created_at", "live_connections", "webhook_deliveries")
    fieldsets = (
        (None, {"fields": ("id", "name", "active")}),
        (
            "Limits",
            {
                "fields": (
                    "max_connections",
                    "max_connections_per_user",
                    "rate_limit_frames",
                    "rate_limit_window_s",
                    "max_active_requests",
                    "max_active_requests_per_user",
                    "max_running",
                )
            },
        ),
        ("Webhooks", {"fields": ("webhook_url", "webhook_secret", "webhook_deliveries")}),
        ("Live", {"fields": ("live_connections", "created_at")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> Any:
        # The id is the tenant_id claim of tokens and the key of its data: fixed once made.
        return (*self.readonly_fields, "id") if obj is not None else self.readonly_fields

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """Count the live connections of the whole page at once (then cached 10 s), so
        the column below reads the cache instead of querying per row."""
        changelist = super().get_changelist_instance(request)
        connection_counts([tenant.id for tenant in changelist.result_list])
        return changelist

    @admin.display(description="deliveries")
    def webhook_deliveries(self, obj: Tenant) -> str:
        if not obj.pk or obj._state.adding:
            return "—"
        url = reverse("admin:connections_webhook_list") + "?" + urlencode({"tenant": obj.pk})
        return format_html('<a href="{}">Webhook deliveries of {}</a>', url, obj.pk)

    @admin.display(description="live connections")
    def live_connections(self, obj: Tenant) -> str:
        if not obj.pk or obj._state.adding:
            return "—"
        count = connection_counts([obj.pk]).get(obj.pk)
        url = reverse("admin:connections_live_list", current_app=self.admin_site.name)
        url += query_string(tenant=obj.pk)
        if count is None:
            return format_html('<a href="{}">unavailable</a>', url)
        over = bool(obj.max_connections) and count >= obj.max_connections
        return format_html(
            '<a href="{}"{}>{}</a>',
            url,
            format_html(' class="{}"', "over-limit") if over else "",
            count,
        )

    # --- saving --------------------------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: Tenant, form: ModelForm, change: bool) -> None:
        was_active = change and Tenant.objects.filter(pk=obj.pk, active=True).exists()
        super().save_model(request, obj, form, change)
        if was_active and not obj.active:
            self._report_close(request, obj, run(close_tenant_connections(obj.pk)))

    # --- actions -------------------------------------------------------------------------

    @admin.action(description="Enable selected tenants", permissions=["change"])
    def enable_tenants(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        changed = 0
        for tenant in queryset.filter(active=False):
            tenant.active = True
            tenant.save(update_fields=["active"])  # save(): the tenant cache is told
            self.log_change(request, tenant, "Enabled")
            changed += 1
        messages.success(request, f"Enabled {changed} tenant(s).")

    @admin.action(
        description="Disable selected tenants (closes their connections)", permissions=["change"]
    )
    def disable_tenants(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            if tenant.active:
                tenant.active = False
                tenant.save(update_fields=["active"])
            # Close even when it was already disabled: sockets may outlive the cache.
            report = run(close_tenant_connections(tenant.pk))
            self._report_close(request, tenant, report)

    def _report_close(self, request: HttpRequest, tenant: Tenant, report: CloseReport) -> None:
        if report.error:
            self.log_change(request, tenant, "Disabled; its connections could not be listed")
            messages.error(
                request,
                f"Tenant {tenant.pk} disabled, but its connections could not be listed "
                "(storage unavailable): they are refused at their next connect only.",
            )
            return
        self.log_change(
            request, tenant, f"Disabled; closed {report.closed} live connection(s) with 4403"
        )
        text = f"Tenant {tenant.pk} disabled: closed {report.closed} live connection(s) with 4403."
        if report.failed:
            messages.warning(request, f"{text} {report.failed} could not be reached.")
        else:
            messages.success(request, text)

    @admin.action(description="Create an API key for each selected tenant", permissions=["change"])
    def create_api_key(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> HttpResponse:
        keys = []
        for tenant in queryset:
            row, secret = ApiKey.issue(tenant, name=f"created by {request.user.get_username()}")
            self.log_change(request, tenant, f"Created API key {row}")
            keys.append((row, secret))
        return new_keys_page(request, self.admin_site, keys)


class ApiKeyForm(ModelForm):
    class Meta:
        model = ApiKey
        fields = ("tenant", "name")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("__str__", "tenant", "name", "created_at", "revoked_at", "is_active")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "tenant")
    search_fields = ("name", "lookup", "tenant__id", "tenant__name")
    list_select_related = ("tenant",)
    actions = ("revoke_keys",)
    form = ApiKeyForm

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        if obj is None:
            return ("tenant", "name")
        return ("key", "tenant", "name", "created_at", "revoked_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        if obj is None:
            return ()
        return ("key", "tenant", "created_at", "revoked_at")

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"tenant": request.GET.get("tenant")} if request.GET.get("tenant") else {}

    @admin.display(description="key")
    def key(self, obj: ApiKey) -> str:
        return str(obj)

    @admin.display(boolean=True, description="active")
    def is_active(self, obj: ApiKey) -> bool:
        return obj.active

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # A new key: ApiKey.issue makes the secret and stores only its hash.
        row, secret = ApiKey.issue(obj.tenant, name=obj.name)
        obj.pk, obj.lookup, obj.key_hash, obj.created_at = (
            row.pk,
            row.lookup,
            row.key_hash,
            row.created_at,
        )
        obj._state.adding = False
        obj._state.db = row._state.db
        request._new_api_key = (obj, secret)  # type: ignore[attr-defined]  # for response_add

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        """Answer the creation with the page showing the new key, instead of a redirect
        that would need the secret carried in a message."""
        return new_keys_page(request, self.admin_site, [request._new_api_key])  # type: ignore[attr-defined]

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for key in queryset.filter(revoked_at=None):
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            self.log_change(request, key, "Revoked")
            revoked += 1
        messages.success(request, f"Revoked {revoked} API key(s).")
