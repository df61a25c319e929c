"""Transports, chosen by the ``STREAMER_TRANSPORTS`` setting the way Channels chooses a
layer from ``CHANNEL_LAYERS``::

    STREAMER_TRANSPORTS = {
        "channels": {"BACKEND": "connections.transports.channels.ChannelsTransport"},
        "apigw": {"BACKEND": "connections.transports.apigw.ApiGatewayTransport",
                  "CONFIG": {"max_attempts": 4}},
    }

Each connection record names the transport that holds its socket.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from connections.transports.base import ConnectionGone, Transport, TransportError

__all__ = ["ConnectionGone", "Transport", "TransportError", "get_transport", "transports"]


class InvalidTransportError(ValueError):
    """A transport name or backend that the settings do not define."""


class TransportManager:
    """Builds each configured transport once, on first use."""

    def __init__(self) -> None:
        self._backends: dict[str, Transport] = {}
        self._lock = threading.Lock()
        setting_changed.connect(self._reset)

    def _reset(self, setting: str, **kwargs: object) -> None:
        if setting == "STREAMER_TRANSPORTS":
            self._backends = {}

    @property
    def configs(self) -> dict[str, dict]:
        return getattr(settings, "STREAMER_TRANSPORTS", {})

    def __getitem__(self, name: str) -> Transport:
        backend = self._backends.get(name)
        if backend is None:
            with self._lock:
                backend = self._backends.get(name) or self._make(name)
                self._backends[name] = backend
        return backend

    def _make(self, name: str) -> Transport:
        try:
            config = self.configs[name]
            cls = import_string(config["BACKEND"])
        except (KeyError, ImportError) as exc:
            raise InvalidTransportError(f"transport {name!r} is not configured") from exc
        return cls(name, **config.get("CONFIG", {}))

    def names(self) -> list[str]:
        """The configured transport names."""
        return list(self.configs)

    def set(self, name: str, transport: Transport) -> None:
        """Install a transport instance (used by tests and entry points)."""
        self._backends[name] = transport

    async def aclose(self) -> None:
        """Shut down every transport built so far, waiting for in-flight sends."""
        for backend in list(self._backends.values()):
            await backend.aclose()


transports = TransportManager()


def get_transport(name: str) -> Transport:
    """The transport called ``name`` in ``STREAMER_TRANSPORTS``."""
    return transports[name]
