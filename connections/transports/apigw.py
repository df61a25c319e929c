"""Sockets held by an AWS API Gateway WebSocket API, reached with the Management API
(``PostToConnection``).

The connection record's ``address`` is the connection's Management API URL:
``https://{api-id}.execute-api.{region}.amazonaws.com/{stage}/@connections/{id}``
(see :func:`apigw_address`), so a send needs no storage read.

Failures: 410 Gone → :class:`ConnectionGone` (the caller removes the records);
429 and 5xx → retried (tenacity) with exponential backoff and jitter, honouring
``Retry-After``, never sleeping after the last attempt; 403 and 413 → no retry. The
boto3 client's own retries are off, so every attempt is counted and bounded here. Frames over API
Gateway's 128 KiB limit are refused before any call. A per-connection circuit breaker
(bounded memory) stops hammering a connection that keeps failing. No client is made for
an endpoint that :class:`~connections.transports.apigw_endpoint.EndpointPolicy` refuses
(:class:`EndpointRefused`), so a forged address never gets a frame.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from cachetools import LRUCache
from prometheus_client import Counter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential

from connections.transports.apigw_endpoint import EndpointPolicy, EndpointRefused
from connections.transports.base import ConnectionGone, Transport, TransportError

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 128 * 1024
SEPARATOR = "/@connections/"

APIGW_CALLS = Counter(
    "streamer_apigw_calls_total", "PostToConnection/DeleteConnection calls by outcome", ["outcome"]
)


class FrameTooLarge(TransportError):
    """The frame exceeds API Gateway's 128 KiB limit; it was not sent."""


class Forbidden(TransportError):
    """API Gateway refused the call (403): wrong endpoint or missing permission."""


class CircuitOpen(TransportError):
    """The connection failed too often recently; sends are skipped for a while."""


class Throttled(TransportError):
    """Still throttled or failing (429/5xx) after every attempt."""


def apigw_address(domain_name: str, stage: str, connection_id: str) -> str:
    """The Management API URL of one API Gateway connection."""
    return f"https://{domain_name}/{stage}{SEPARATOR}{connection_id}"


def split_address(address: str) -> tuple[str, str]:
    """(endpoint URL, connection id) of an API Gateway address."""
    endpoint, sep, connection_id = address.rpartition(SEPARATOR)
    if not sep or not endpoint or not connection_id:
        raise TransportError("not an API Gateway connection address")
    return endpoint, connection_id


class _Retryable(TransportError):
    """One attempt met throttling, a 5xx or a network error: worth another attempt."""

    def __init__(self, throttled: bool, retry_after_s: float | None = None) -> None:
        super().__init__("API Gateway attempt failed")
        self.throttled = throttled
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    """Per-key failure counts with a cool-down; remembers at most ``max_keys`` keys
    (the least recently failing or asked about are forgotten first)."""

    def __init__(
        self, threshold: int = 5, cooldown_s: float = 30.0, max_keys: int = 10_000
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._state: LRUCache[str, tuple[int, float]] = LRUCache(max_keys)
        self._lock = threading.Lock()

    @property
    def max_keys(self) -> int:
        """How many keys are remembered at most."""
        return int(self._state.maxsize)

    @max_keys.setter
    def max_keys(self, value: int) -> None:
        with self._lock:
            resized: LRUCache[str, tuple[int, float]] = LRUCache(value)
            for key, state in list(self._state.items())[-value:]:
                resized[key] = state
            self._state = resized

    def allow(self, key: str) -> bool:
        """False while the circuit of ``key`` is open."""
        with self._lock:
            failures, opened_at = self._state.get(key, (0, 0.0))
            if failures < self.threshold:
                return True
            if time.monotonic() - opened_at >= self.cooldown_s:
                self._state[key] = (self.threshold - 1, 0.0)  # half-open: one trial
                return True
            return False

    def success(self, key: str) -> None:
        with self._lock:
            self._state.pop(key, None)

    def failure(self, key: str) -> None:
        with self._lock:
            failures = self._state.get(key, (0, 0.0))[0] + 1
            self._state[key] = (failures, time.monotonic() if failures >= self.threshold else 0.0)

    def __len__(self) -> int:
        return len(self._state)


class ApiGatewayTransport(Transport):
    """PostToConnection with bounded, honest retries."""

    def __init__(
        self,
        name: str,
        *,
        max_attempts: int = 4,
        base_backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        region: str | None = None,
        breaker_threshold: int = 5,
        breaker_cooldown_s: float = 30.0,
        max_clients: int = 64,
        **config: Any,
    ) -> None:
        super().__init__(name, **config)
        self.max_attempts = max(1, max_attempts)
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.region = region
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown_s)
        self.max_clients = max_clients
        self._clients: LRUCache[str, Any] = LRUCache(max_clients)
        self._clients_lock = threading.Lock()
        self._in_flight: set[asyncio.Future[Any]] = set()
        self.sleep = asyncio.sleep  # replaced in tests to observe backoff

    def client(self, endpoint: str) -> Any:
        """A Management API client for ``endpoint`` (cached, bounded); EndpointRefused
        for an endpoint the deployment's policy does not allow."""
        with self._clients_lock:
            client = self._clients.get(endpoint)
            if client is None:
                try:
                    EndpointPolicy.from_settings().check(endpoint)
                except EndpointRefused:
                    APIGW_CALLS.labels("endpoint_refused").inc()
                    raise
                client = boto3.client(
                    "apigatewaymanagementapi",
                    endpoint_url=endpoint,
                    region_name=self.region or _region_of(endpoint),
                    config=Config(
                        retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5
                    ),
                )
                self._clients[endpoint] = client
            return client

    async def send(self, address: str, frame: dict[str, Any], text: str) -> None:
        data = text.encode()
        if len(data) > MAX_FRAME_BYTES:
            APIGW_CALLS.labels("too_large").inc()
            raise FrameTooLarge("frame larger than 128 KiB")
        endpoint, connection_id = split_address(address)
        if not _never_dropped(frame) and not self.breaker.allow(address):
            APIGW_CALLS.labels("circuit_open").inc()
            raise CircuitOpen("connection failing; circuit open")
        client = self.client(endpoint)
        await self._with_retries(
            address, lambda: client.post_to_connection(ConnectionId=connection_id, Data=data)
        )

    async def close(self, address: str, code: int, reason: str = "") -> None:
        """API Gateway cannot send a close code: the connection is deleted."""
        endpoint, connection_id = split_address(address)
        client = self.client(endpoint)
        await self._with_retries(
            address, lambda: client.delete_connection(ConnectionId=connection_id)
        )

    async def _with_retries(self, address: str, call: Any) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),  # no sleep after the last one
            wait=self._delay,
            retry=retry_if_exception_type(_Retryable),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._attempt(address, call)
        except _Retryable as exc:
            if not exc.throttled:
                # Throttling is the account's rate, not this connection failing: counting
                # it would open every circuit in a storm and mute them after it ends.
                self.breaker.failure(address)
            raise Throttled("API Gateway kept failing") from None

    async def _attempt(self, address: str, call: Any) -> None:
        """One call; raises what it means (:class:`_Retryable` when worth a retry)."""
        # Management API posts, not storage: they stay off the storage pool, so a slow
        # API Gateway endpoint never queues storage calls behind its posts.
        future = asyncio.ensure_future(asyncio.to_thread(call))
        self._in_flight.add(future)
        try:
            await future
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = exc.response.get("Error", {}).get("Code", "")
            if status == 410 or code == "GoneException":
                APIGW_CALLS.labels("gone").inc()
                self.breaker.success(address)
                raise ConnectionGone("connection is gone") from None
            if status in (403, 413) or code in ("ForbiddenException", "PayloadTooLargeException"):
                APIGW_CALLS.labels(f"rejected_{status or code}").inc()
                self.breaker.failure(address)
                raise (Forbidden if status == 403 else FrameTooLarge)(
                    "rejected by API Gateway"
                ) from None
            if status != 429 and status < 500 and code not in _THROTTLED:
                APIGW_CALLS.labels("error").inc()
                self.breaker.failure(address)
                raise TransportError("API Gateway error") from None
            throttled = status == 429 or code in _THROTTLED
            APIGW_CALLS.labels("throttled" if throttled else "server_error").inc()
            raise _Retryable(throttled, _retry_after(exc.response)) from None
        except BotoCoreError:
            APIGW_CALLS.labels("network").inc()
            raise _Retryable(throttled=False) from None
        finally:
            self._in_flight.discard(future)
        APIGW_CALLS.labels("ok").inc()
        self.breaker.success(address)

    def _delay(self, state: RetryCallState) -> float:
        """Before the next attempt: ``Retry-After`` when API Gateway sent one (capped at
        4 × ``max_backoff_s``), else exponential backoff with jitter in [0.5, 1]."""
        failed = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(failed, "retry_after_s", None)
        if retry_after is not None:
            return float(min(self.max_backoff_s * 4, max(0.0, retry_after)))
        backoff = wait_exponential(multiplier=self.base_backoff_s, max=self.max_backoff_s)
        return float(backoff(state)) * random.uniform(0.5, 1.0)

    async def aclose(self) -> None:
        """Wait for in-flight calls to end."""
        if self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)


_THROTTLED = ("LimitExceededException", "ThrottlingException", "TooManyRequestsException")


def _retry_after(response: dict[str, Any]) -> float | None:
    """The ``Retry-After`` header in seconds, when present and a number."""
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    try:
        return float(headers["retry-after"]) if headers.get("retry-after") else None
    except ValueError:
        return None


def _never_dropped(frame: dict[str, Any]) -> bool:
    """Terminal frames and 100 % progress are never dropped (docs/protocol.md §5): they skip
    an open circuit (one per request, they cannot hammer a connection)."""
    kind = frame.get("type")
    if kind in ("complete", "error"):
        return True
    return kind == "progress" and (frame.get("percentage") or 0) >= 100


def _region_of(endpoint: str) -> str:
    # https://{api}.execute-api.{region}.amazonaws.com/{stage}
    host = endpoint.split("//", 1)[-1].split("/", 1)[0]
    parts = host.split(".")
    if len(parts) > 3 and parts[1] == "execute-api":
        return parts[2]
    return "us-east-1"
