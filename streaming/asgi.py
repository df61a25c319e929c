"""ASGI entry point: HTTP through Django, WebSockets at /ws through the consumer."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streaming.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from streaming.consumer import StreamerConsumer  # noqa: E402
from streaming.origin import browser_origin_validator  # noqa: E402

websocket_urlpatterns = [re_path(r"^ws/?$", StreamerConsumer.as_asgi())]
if settings.STREAMER_BENCH_ENDPOINTS:
    from streaming.benchmarks import BareEchoConsumer

    websocket_urlpatterns.append(re_path(r"^bench/echo/?$", BareEchoConsumer.as_asgi()))

# Under ``manage.py serve`` (daphne) nothing else serves /static/ in development: the
# demo page and the JS client come from Django's static files finders when DEBUG is on
# (production serves collectstatic's output from a CDN or reverse proxy instead).
http_app = django_asgi_app
if settings.DEBUG:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_app = ASGIStaticFilesHandler(django_asgi_app)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": browser_origin_validator(URLRouter(websocket_urlpatterns)),
    }
)
