"""Which API Gateway Management API endpoints frames may be posted to.

An API Gateway event names its own ``domainName`` and ``stage``; a forged event (a leaked
``STREAMER_APIGW_SHARED_SECRET``, a misrouted integration) could otherwise make every
later send POST frames, signed with our credentials, to a host of the attacker's choice.
So an endpoint is accepted only when it is

* the configured one (``STREAMER_APIGW_ENDPOINT``), when that is set: nothing else is; or
* ``https://<api-id>.execute-api.<region>.amazonaws.com[.cn]/<stage>``, and, when
  ``STREAMER_APIGW_ALLOWED_HOSTS`` is set, its api id (or its whole host, for a custom
  domain) is in that list.

Stage names follow API Gateway's rule (letters, digits, ``-`` and ``_``, at most 128).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from connections.transports.base import TransportError

# <api-id>.execute-api.<region>.amazonaws.com (China regions: .amazonaws.com.cn)
EXECUTE_API_HOST = re.compile(
    r"(?P<api_id>[a-z0-9]{1,32})\.execute-api\.[a-z]{2}(?:-[a-z]+)+-\d{1,2}"
    r"\.amazonaws\.com(?:\.cn)?"
)
STAGE = re.compile(r"[A-Za-z0-9_-]{1,128}")
# API Gateway connection ids are base64-like; "@" would let one forge the separator.
CONNECTION_ID = re.compile(r"[A-Za-z0-9+/=_-]{1,128}")


class EndpointRefused(TransportError):
    """The endpoint is neither the configured one nor an allowed API Gateway endpoint."""


@dataclass(frozen=True)
class EndpointPolicy:
    """The endpoints this deployment may post to (see the module docstring)."""

    configured: str = ""
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls) -> EndpointPolicy:
        """The policy of ``STREAMER_APIGW_ENDPOINT`` and ``STREAMER_APIGW_ALLOWED_HOSTS``."""
        from django.conf import settings

        allowed = getattr(settings, "STREAMER_APIGW_ALLOWED_HOSTS", ()) or ()
        configured = getattr(settings, "STREAMER_APIGW_ENDPOINT", "") or ""
        return cls(configured.rstrip("/"), frozenset(h.lower() for h in allowed))

    def endpoint_for(self, domain_name: object, stage: object) -> str:
        """The Management endpoint of an event's ``domainName``/``stage``: the configured
        one when set, else the derived one if allowed; :class:`EndpointRefused` otherwise."""
        if self.configured:
            return self.configured
        if not isinstance(domain_name, str) or not isinstance(stage, str):
            raise EndpointRefused("event has no domain name or stage")
        return self.check(f"https://{domain_name.lower()}/{stage}")

    def check(self, endpoint: str) -> str:
        """``endpoint`` if frames may be posted to it, else :class:`EndpointRefused`."""
        if self.configured:
            if endpoint.rstrip("/") != self.configured:
                raise EndpointRefused("not the configured API Gateway endpoint")
            return endpoint
        url = urlsplit(endpoint)
        host = url.hostname or ""
        stage = url.path[1:]
        if (
            url.scheme != "https"
            or url.port is not None
            or url.username is not None
            or url.query
            or url.fragment
            or url.netloc != host  # upper case, userinfo, port: not an AWS host
            or not STAGE.fullmatch(stage)
            or not self._host_allowed(host)
        ):
            raise EndpointRefused("not an allowed API Gateway endpoint")
        return endpoint

    def _host_allowed(self, host: str) -> bool:
        if host in self.allowed_hosts:
            return True  # a listed custom domain (or a listed full execute-api host)
        match = EXECUTE_API_HOST.fullmatch(host)
        if match is None:
            return False
        return not self.allowed_hosts or match["api_id"] in self.allowed_hosts


def check_connection_id(connection_id: object) -> str:
    """``connection_id`` if it can be an API Gateway connection id, else EndpointRefused."""
    if not isinstance(connection_id, str) or not CONNECTION_ID.fullmatch(connection_id):
        raise EndpointRefused("not an API Gateway connection id")
    return connection_id
