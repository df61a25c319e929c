"""The ASGI routing (streaming/asgi.py) and its options."""

from __future__ import annotations

import importlib

import pytest

import streaming.asgi

pytestmark = pytest.mark.usefixtures("asgi_settings")


def test_routing_options(settings) -> None:
    settings.DEBUG = True
    settings.STREAMER_BENCH_ENDPOINTS = True
    try:
        module = importlib.reload(streaming.asgi)
        patterns = [p.pattern.regex.pattern for p in module.websocket_urlpatterns]
        assert any("ws" in p for p in patterns) and any("bench" in p for p in patterns)
        assert type(module.http_app).__name__ == "ASGIStaticFilesHandler"
    finally:
        settings.DEBUG = False
        settings.STREAMER_BENCH_ENDPOINTS = False
        module = importlib.reload(streaming.asgi)
    assert [p.pattern.regex.pattern for p in module.websocket_urlpatterns] == ["^ws/?$"]
