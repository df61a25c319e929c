"""HTTP routes. WebSockets are routed in streaming/asgi.py."""

from django.urls import path

from streaming import api, demo_jobs, http_api, views
from streaming.admin_site import site as admin_site

urlpatterns = [
    path("", views.index, name="index"),
    path("dev/token", views.dev_token, name="dev-token"),
    path("dev/start-report", demo_jobs.dev_start_report, name="dev-start-report"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("api/v1/", http_api.api.urls),
    path("apigw/events", api.apigw_events_view, name="apigw-events"),
    path("admin/", admin_site.urls),
]
