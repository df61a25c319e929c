"""Origin checking for browsers (Channels' ``AllowedHostsOriginValidator``), letting
non-browser clients through: they send no ``Origin`` header and cannot be tricked into
cross-site requests, so they are authenticated by their token alone."""

from __future__ import annotations

from typing import Any

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    """A missing Origin is allowed; a present one must match ``ALLOWED_HOSTS``."""

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def browser_origin_validator(application: Any) -> BrowserOriginValidator:
    """Wrap ``application`` with the origin check configured from ``ALLOWED_HOSTS``."""
    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed_hosts)
