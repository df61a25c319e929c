"""ASGI entry point: HTTP through Django, WebSockets at /ws through the consumer."""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streaming.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from streaming.api import GATES, REQUESTS_PATHS  # noqa: E402
from streaming.body_guard import BodyGuard  # noqa: E402
from streaming.consumer import StreamerConsumer, UnknownPathConsumer  # noqa: E402
from streaming.jwt_config import check_jwt_config  # noqa: E402
from streaming.origin import browser_origin_validator  # noqa: E402
from streaming.server_integration import install_daphne_backpressure  # noqa: E402

websocket_urlpatterns = [re_path(r"^ws/?$", StreamerConsumer.as_asgi())]
if settings.STREAMER_BENCH_ENDPOINTS:
    from streaming.benchmarks import BareEchoConsumer

    websocket_urlpatterns.append(re_path(r"^bench/echo/?$", BareEchoConsumer.as_asgi()))
# Last: any other path is refused at the handshake, never logged (see the consumer).
websocket_urlpatterns.append(re_path(r"", UnknownPathConsumer.as_asgi()))

# Under ``manage.py serve`` (daphne) nothing else serves /static/ in development: the
# demo page and the JS client come from Django's static files finders when DEBUG is on
# (production serves collectstatic's output from a CDN or reverse proxy instead).
http_app = django_asgi_app
if settings.DEBUG:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_app = ASGIStaticFilesHandler(django_asgi_app)


def _allow_1011_under_daphne() -> None:
    """daphne closes a socket with autobahn's ``sendClose``, which refuses every code but
    1000 and 3000-4999; docs/protocol.md §1 closes with 1011 when storage is down, which then
    crashed the consumer (an ERROR traceback per refused connect). Send such codes as a
    plain close frame instead."""
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # pragma: no cover - another ASGI server
        return

    def server_close(self: Any, code: int | None = None) -> None:
        code = 1000 if code is None else code
        if code == 1000 or 3000 <= code <= 4999:
            self.sendClose(code=code)
        else:
            self.sendCloseFrame(code=code)

    WebSocketProtocol.serverClose = server_close


_allow_1011_under_daphne()
install_daphne_backpressure()
# Start-up, not the first connect, is where a JWT configuration that cannot work fails.
check_jwt_config()

application = ProtocolTypeRouter(
    {
        "http": BodyGuard(
            http_app,
            GATES,
            lambda: settings.STREAMER_MAX_HTTP_BODY_BYTES,
            with_retryable=REQUESTS_PATHS,
        ),
        "websocket": browser_origin_validator(URLRouter(websocket_urlpatterns)),
    }
)
