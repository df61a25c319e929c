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
    assert [p.pattern.regex.pattern for p in module.websocket_urlpatterns] == ["^ws/?$", ""]


@pytest.mark.parametrize("path", ["/wsx", "/ws/extra", "/ws/SECRET-TOKEN", "/"])
async def test_a_socket_to_an_unknown_path_is_refused_without_logging_it(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Channels' router raised "No route found for path ..." and the server logged the
    path, a token in it included (tests/reliability/test_secrets_in_logs.py found one)."""
    from channels.testing import WebsocketCommunicator

    comm = WebsocketCommunicator(streaming.asgi.application, path)
    connected, code = await comm.connect(5)
    assert (connected, code) == (False, 1000)
    assert "SECRET-TOKEN" not in caplog.text and "No route" not in caplog.text
