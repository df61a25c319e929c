"""API Gateway throttling storms and 5xx bursts against the Management API transport,
through the connection manager's fan-out (a patched boto3 client: no network, and a
clock that stands still, so no 30 s cool-down of the breaker can elapse by chance).

What must hold: every frame costs at most ``max_attempts`` calls and never a sleep after
the last one; the per-connection breaker and the client cache stay bounded however many
connections and endpoints fail; a fan-out reports failures instead of raising; and once
the storm is over, frames reach every live connection again.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

import connections.transports.apigw as apigw_module
from connections.manager import ConnectionManager, Target
from connections.transports import transports
from connections.transports.apigw import ApiGatewayTransport, apigw_address
from protocol import frames
from tests.support.clock import Clock

ENDPOINTS = 100  # more than the client cache holds
PER_ENDPOINT = 2
MAX_CLIENTS = 16
STORM_FRAMES = 6  # per connection while the storm lasts


class ManagementAPI:
    """What API Gateway answers: a storm of errors, then normal service."""

    def __init__(self, errors: list[tuple[int, str, str | None]]) -> None:
        self.errors = errors  # (status, code, Retry-After) drawn at random during the storm
        self.storm = True
        self.rng = random.Random(8)
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, str, bytes]] = Counter()
        self.delivered: defaultdict[tuple[str, str], list[bytes]] = defaultdict(list)
        self.clients_built = 0

    def client(self, service: str, endpoint_url: str, **_: Any) -> FakeClient:
        assert service == "apigatewaymanagementapi"
        with self.lock:
            self.clients_built += 1
        return FakeClient(self, endpoint_url)


class FakeClient:
    def __init__(self, api: ManagementAPI, endpoint: str) -> None:
        self.api = api
        self.endpoint = endpoint

    def post_to_connection(self, ConnectionId: str, Data: bytes) -> dict[str, Any]:
        api = self.api
        with api.lock:
            api.calls[(self.endpoint, ConnectionId, Data)] += 1
            error = api.rng.choice(api.errors) if api.storm else None
            if error is None:
                api.delivered[(self.endpoint, ConnectionId)].append(Data)
                return {}
        status, code, retry_after = error
        headers = {"retry-after": retry_after} if retry_after else {}
        raise ClientError(
            {
                "Error": {"Code": code, "Message": "storm"},
                "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
            },
            "PostToConnection",
        )


class Harness:
    def __init__(
        self, api: ManagementAPI, clock: Clock, endpoints: int = ENDPOINTS, **options: Any
    ) -> None:
        self.api = api
        self.clock = clock
        options = {"max_attempts": 4, "base_backoff_s": 0.05, "max_backoff_s": 2.0, **options}
        self.transport = ApiGatewayTransport("apigw", max_clients=MAX_CLIENTS, **options)
        self.sleeps: list[float] = []
        self.transport.sleep = self._sleep  # type: ignore[method-assign]
        self.manager = ConnectionManager(concurrency=64)
        self.targets = [
            Target(
                f"c{e}-{i}",
                "apigw",
                apigw_address(f"api{e}.execute-api.eu-west-1.amazonaws.com", "prod", f"c{e}-{i}"),
            )
            for e in range(endpoints)
            for i in range(PER_ENDPOINT)
        ]

    async def _sleep(self, delay: float) -> None:
        # Recorded, not waited (the backoff values are what is checked).
        self.sleeps.append(delay)

    async def fan_out(self, frame: dict[str, Any]) -> Any:
        return await self.manager.broadcast(self.targets, frame)

    def check_bounded(self) -> None:
        t = self.transport
        assert len(t._clients) <= MAX_CLIENTS
        assert len(t.breaker) <= t.breaker.max_keys
        assert not t._in_flight
        # No frame ever cost more than max_attempts calls.
        assert max(self.api.calls.values()) <= t.max_attempts
        # Backoff is bounded: at most 4 x max_backoff_s even when Retry-After asks more.
        assert max(self.sleeps, default=0) <= 4 * t.max_backoff_s

    def delivered_to_all(self, frame: dict[str, Any]) -> int:
        """How many connections received ``frame`` (compared decoded)."""
        count = 0
        for target in self.targets:
            endpoint, connection_id = apigw_module.split_address(target.address)
            got = [json.loads(d) for d in self.api.delivered[(endpoint, connection_id)]]
            count += sum(1 for g in got if g == frame)
        return count


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """time.monotonic for the breaker, standing still: no cool-down ever elapses by
    itself, so whatever flows after the storm does so without waiting one out."""
    fake = Clock(10_000.0)
    monkeypatch.setattr(apigw_module.time, "monotonic", fake)
    return fake


@pytest.fixture
def installed() -> Iterator[None]:
    saved = dict(transports._backends)
    yield
    transports._backends = saved


THROTTLING = [
    (429, "LimitExceededException", None),
    (429, "LimitExceededException", "1.5"),
    (429, "TooManyRequestsException", "30"),  # asks for more than the cap
    (400, "ThrottlingException", None),
]
FIVE_XX = [
    (500, "InternalServerErrorException", None),
    (502, "BadGateway", None),
    (503, "ServiceUnavailable", None),
    (504, "GatewayTimeout", None),
]


@pytest.mark.parametrize(("kind", "errors"), [("throttling", THROTTLING), ("5xx", FIVE_XX)])
async def test_storm_then_every_live_connection_gets_its_frames(
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
    installed: None,
    kind: str,
    errors: list[tuple[int, str, str | None]],
    figures: dict[str, str],
) -> None:
    api = ManagementAPI(errors)
    monkeypatch.setattr(apigw_module.boto3, "client", api.client)
    h = Harness(api, clock)
    transports.set("apigw", h.transport)
    connections = len(h.targets)

    # The storm: every call fails; each fan-out reports failures and never raises.
    sends = 0
    for n in range(STORM_FRAMES):
        frame = frames.progress("req-1", 10.0 * (n + 1), "working")
        report = await h.fan_out(frame)
        sends += connections
        assert report.delivered == 0
        assert len(report.failed) == connections
        assert report.gone == []
    h.check_bounded()
    breaker_entries = len(h.transport.breaker)
    storm_calls = sum(api.calls.values())
    assert storm_calls <= sends * h.transport.max_attempts
    assert api.clients_built >= ENDPOINTS  # the cache was churned, and stayed bounded

    # The storm ends.
    api.storm = False
    skipped = 0
    if kind == "throttling":
        # Throttling is the account's rate, not the connections' fault: no circuit
        # opened, so nothing is skipped once it is over.
        assert breaker_entries == 0
    else:
        # Repeated 5xx opened every connection's circuit: progress below 100 % is
        # skipped (it is coalesced anyway)...
        assert breaker_entries == connections
        muted = await h.fan_out(frames.progress("req-1", 70.0, "muted"))
        assert muted.delivered == 0 and len(muted.failed) == connections
        skipped = len(muted.failed)
    # ...but 100 % and the terminal frame are never dropped, and their success closes
    # the circuit: from then on every frame flows again, with no cool-down to wait.
    last = frames.progress("req-1", 100.0, "done")
    done = frames.complete("req-1", {"ok": True})
    after = frames.progress("req-2", 50.0, "next")
    reports = [await h.fan_out(f) for f in (last, done, after)]
    for report in reports:
        assert report.delivered == connections, report.failed[:5]
    assert h.delivered_to_all(done) == connections
    assert len(h.transport.breaker) == 0
    h.check_bounded()

    figures[f"API Gateway {kind} storm"] = (
        f"{connections} connections on {ENDPOINTS} endpoints, {sends} frames during the storm "
        f"→ {storm_calls} calls (≤ {h.transport.max_attempts} per frame), breaker entries "
        f"{breaker_entries} (cap {h.transport.breaker.max_keys}), cached clients "
        f"{len(h.transport._clients)} (cap {MAX_CLIENTS}); after the storm "
        f"{sum(r.delivered for r in reports)}/{3 * connections} frames delivered (100 %, "
        f"complete, next progress)"
        + (f", {skipped} sub-100 % progress frames skipped by open circuits" if skipped else "")
        + "; terminal frames lost after the storm: 0"
    )


async def test_breaker_memory_stays_bounded_when_thousands_of_connections_fail(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, installed: None
) -> None:
    api = ManagementAPI(FIVE_XX)
    monkeypatch.setattr(apigw_module.boto3, "client", api.client)
    h = Harness(api, clock, endpoints=1000, max_attempts=1)
    h.transport.breaker.max_keys = 100
    transports.set("apigw", h.transport)
    for n in range(2):
        report = await h.fan_out(frames.progress("r", 10.0 * (n + 1), ""))
        assert len(report.failed) == len(h.targets) == 2000
    h.check_bounded()
    assert len(h.transport.breaker) == 100
    assert len(h.transport._clients) == MAX_CLIENTS
