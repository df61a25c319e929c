"""Each Lambda function checks only the settings it needs: the worker and sweep verify
no token, so they start without a JWT key (their role is not given one)."""

from __future__ import annotations

import importlib

import pytest
from django.core.exceptions import ImproperlyConfigured


@pytest.mark.parametrize(
    ("handler", "needs_jwt"),
    [
        ("streaming.lambda_handlers.websocket", True),
        ("", True),  # not on Lambda: every handler may run
        ("streaming.lambda_handlers.stream", False),
        ("streaming.lambda_handlers.sweep", False),
    ],
)
def test_only_the_websocket_function_needs_a_jwt_key(settings, monkeypatch, handler, needs_jwt):
    from tests.support.apigw import SECRET

    settings.STREAMER_JWT_SECRET = SECRET
    module = importlib.import_module("streaming.lambda_handlers")
    settings.STREAMER_JWT_SECRET = ""
    settings.STREAMER_JWT_PUBLIC_KEY = ""
    monkeypatch.setenv("_HANDLER", handler)
    if needs_jwt:
        with pytest.raises(ImproperlyConfigured, match="STREAMER_JWT_SECRET"):
            module.check_settings()
    else:
        module.check_settings()
    settings.STREAMER_TABLE_PREFIX = ""
    with pytest.raises(ImproperlyConfigured, match="STREAMER_TABLE_PREFIX"):
        module.check_settings()
