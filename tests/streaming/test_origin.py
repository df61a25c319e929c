"""Which browser origins the WebSocket endpoint accepts (streaming/origin.py)."""

from __future__ import annotations

import pytest

from streaming import origin as origin_module

pytestmark = pytest.mark.usefixtures("asgi_settings")


@pytest.mark.parametrize(
    ("debug", "hosts", "expected"),
    [
        (True, [], ["localhost", "127.0.0.1", "[::1]"]),
        (False, [], []),
        (True, ["example.com"], ["example.com"]),
    ],
)
def test_origin_validator_hosts(settings, debug, hosts, expected) -> None:
    settings.DEBUG = debug
    settings.ALLOWED_HOSTS = hosts
    validator = origin_module.browser_origin_validator(object())
    assert validator.allowed_origins == expected
