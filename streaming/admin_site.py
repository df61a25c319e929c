"""The project's admin site (project wiring): Django's admin plus a live dashboard on the
index and the DynamoDB-backed pages of live connections and requests.

``settings.INSTALLED_APPS`` lists :class:`StreamerAdminConfig` instead of
``django.contrib.admin``, so ``admin.site`` (where ``@admin.register`` puts the ORM
models) *is* a :class:`StreamerAdminSite`; ``streaming/urls.py`` mounts :data:`site`.

This module is imported while the app registry is being built: it must not import
models at import time (the views and the dashboard are imported inside the methods).
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite, sites
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.urls import URLPattern, URLResolver, reverse

#: How many tenants the dashboard lists (most connections first).
DASHBOARD_TENANTS = 20


class StreamerAdminSite(AdminSite):
    """Django's admin with Streamer's live pages."""

    site_header = "Streamer administration"
    site_title = "Streamer admin"
    index_title = "Dashboard"
    index_template = "admin/streamer_index.html"

    def get_urls(self) -> list[URLResolver | URLPattern]:
        """The live pages first (Django's catch-all patterns come last)."""
        from connections.admin_views import ConnectionAdminViews
        from connections.admin_webhooks import WebhookAdminViews
        from streaming.admin_views import RequestAdminViews

        return [
            *ConnectionAdminViews(self).get_urls(),
            *RequestAdminViews(self).get_urls(),
            *WebhookAdminViews(self).get_urls(),
            *super().get_urls(),
        ]

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[Any]:
        """Django's app list plus a "Live data (DynamoDB)" section, for those who may see
        tenants."""
        from connections.admin_support import can_view

        apps = super().get_app_list(request, app_label)
        if app_label is None and can_view(request):
            connections_url = reverse("admin:connections_live_list", current_app=self.name)
            apps.append(
                {
                    "name": "Live data (DynamoDB)",
                    "app_label": "live",
                    "app_url": connections_url,
                    "has_module_perms": True,
                    "models": [
                        {
                            "name": "Live connections",
                            "object_name": "LiveConnection",
                            "admin_url": connections_url,
                            "add_url": None,
                            "view_only": True,
                            "perms": {"view": True},
                        },
                        {
                            "name": "Requests",
                            "object_name": "Request",
                            "admin_url": reverse(
                                "admin:streaming_request_list", current_app=self.name
                            ),
                            "add_url": None,
                            "view_only": True,
                            "perms": {"view": True},
                        },
                        {
                            "name": "Webhook deliveries",
                            "object_name": "WebhookDelivery",
                            "admin_url": reverse(
                                "admin:connections_webhook_list", current_app=self.name
                            ),
                            "add_url": None,
                            "view_only": True,
                            "perms": {"view": True},
                        },
                    ],
                }
            )
        return apps

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """The admin index with the dashboard (see ``streaming/stats.py``) above the apps."""
        from connections.admin_support import can_view, format_duration, format_ms
        from streaming.stats import collect_stats

        context = dict(extra_context or {})
        if can_view(request):
            stats = collect_stats()
            tenants = sorted(stats.tenants, key=lambda t: (-(t.connections or 0), t.tenant_id))
            oldest = stats.oldest_waiting
            context["dashboard"] = {
                "stats": stats,
                "generated": format_ms(stats.generated_at),
                "tenants": tenants[:DASHBOARD_TENANTS],
                "tenants_hidden": max(0, stats.tenants_total - DASHBOARD_TENANTS),
                "oldest": oldest,
                "oldest_wait": format_duration(oldest.waiting_ms) if oldest else "",
                "oldest_url": reverse(
                    "admin:streaming_request_detail", args=[oldest.key], current_app=self.name
                )
                if oldest
                else "",
                "workers": [
                    {
                        "beat": w,
                        "alive": w.is_alive(stats.generated_at),
                        "age": format_duration(w.age_ms(stats.generated_at)),
                        "uptime": format_duration(w.last_beat - w.started_at),
                    }
                    for w in stats.workers
                ],
                "alive": len(stats.workers_alive()),
                "stale": len(stats.workers_stale()),
                "connections_url": reverse("admin:connections_live_list", current_app=self.name),
                "requests_url": reverse("admin:streaming_request_list", current_app=self.name),
            }
        return super().index(request, context)


class StreamerAdminConfig(AdminConfig):
    """``django.contrib.admin`` with :class:`StreamerAdminSite` as the default site."""

    default_site = "streaming.admin_site.StreamerAdminSite"


#: The admin site every ``@admin.register`` uses (an instance of StreamerAdminSite once
#: the app registry is ready); ``streaming/urls.py`` mounts ``site.urls``.
site = sites.site
