"""ASGI entry point: HTTP through Django, WebSockets at /ws through the consumer."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streaming.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from streaming.consumer import StreamerConsumer  # noqa: E402
from streaming.origin import browser_origin_validator  # noqa: E402

websocket_urlpatterns = [re_path(r"^ws/?$", StreamerConsumer.as_asgi())]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": browser_origin_validator(URLRouter(websocket_urlpatterns)),
    }
)
