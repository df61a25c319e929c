"""The API Gateway transport against moto and botocore's Stubber: what is posted, how
often, and what each API Gateway failure turns into."""

from __future__ import annotations

import asyncio
import json

import pytest
from botocore.stub import Stubber

from connections.transports.apigw import (
    ApiGatewayTransport,
    CircuitBreaker,
    CircuitOpen,
    Forbidden,
    FrameTooLarge,
    Throttled,
    apigw_address,
    split_address,
)
from connections.transports.base import ConnectionGone, TransportError

ENDPOINT = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
ADDRESS = f"{ENDPOINT}/@connections/conn-1"


def posted_frames(connection_id: str, region: str = "eu-west-1") -> list[dict]:
    """Frames moto received for a connection (it concatenates the bytes)."""
    from urllib.parse import quote

    from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

    connections = apigatewaymanagementapi_backends["123456789012"][region].connections
    # moto keys connections by the URL-encoded id it saw in the path
    data = connections[quote(connection_id, safe="")].data
    decoder, text, frames, pos = json.JSONDecoder(), data.decode(), [], 0
    while pos < len(text):
        frame, pos = decoder.raw_decode(text, pos)
        frames.append(frame)
    return frames


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.calls.append(delay)


def transport(**kwargs) -> tuple[ApiGatewayTransport, RecordingSleep]:
    t = ApiGatewayTransport("apigw", **kwargs)
    sleep = RecordingSleep()
    t.sleep = sleep  # type: ignore[assignment]
    return t, sleep


def error_response(status: int, code: str, retry_after: str | None = None) -> dict:
    headers = {"retry-after": retry_after} if retry_after else {}
    return {"status": status, "code": code, "headers": headers}


def stub_errors(t: ApiGatewayTransport, errors: list[dict], then_ok: bool = False) -> Stubber:
    stubber = Stubber(t.client(ENDPOINT))
    for err in errors:
        stubber.add_client_error(
            "post_to_connection",
            service_error_code=err["code"],
            http_status_code=err["status"],
            response_meta={"HTTPHeaders": err["headers"]},
        )
    if then_ok:
        stubber.add_response("post_to_connection", {})
    stubber.activate()
    return stubber


@pytest.mark.parametrize(
    ("domain", "stage", "connection_id"),
    [("abc.execute-api.us-east-1.amazonaws.com", "prod", "Xy1="), ("ws.example.com", "v1", "q")],
)
def test_address_round_trip(domain: str, stage: str, connection_id: str) -> None:
    address = apigw_address(domain, stage, connection_id)
    assert split_address(address) == (f"https://{domain}/{stage}", connection_id)


@pytest.mark.parametrize(
    "address", ["", "https://x/prod", "/@connections/id", "https://x/@connections/"]
)
def test_bad_address_is_a_transport_error(address: str) -> None:
    with pytest.raises(TransportError):
        split_address(address)


async def test_posts_exactly_the_frame_once(moto_dynamodb) -> None:
    t, sleep = transport()
    frame = {"type": "message", "text": "héllo"}
    await t.send(ADDRESS, frame, json.dumps(frame))
    assert posted_frames("conn-1") == [frame]
    assert sleep.calls == []


async def test_frame_over_128k_is_refused_before_any_call() -> None:
    t, _ = transport()
    stubber = Stubber(t.client(ENDPOINT))
    stubber.activate()  # no responses queued: any call would fail the test
    with pytest.raises(FrameTooLarge):
        await t.send(ADDRESS, {}, "x" * (128 * 1024 + 1))
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("error", "expected", "calls"),
    [
        (error_response(410, "GoneException"), ConnectionGone, 1),
        (error_response(403, "ForbiddenException"), Forbidden, 1),
        (error_response(413, "PayloadTooLargeException"), FrameTooLarge, 1),
        (error_response(400, "BadRequestException"), TransportError, 1),
    ],
)
async def test_non_retryable_errors_are_not_retried(error, expected, calls) -> None:
    t, sleep = transport(max_attempts=4)
    stubber = stub_errors(t, [error] * 4)
    with pytest.raises(expected):
        await t.send(ADDRESS, {}, "{}")
    # exactly `calls` requests were consumed; the rest are still queued
    assert len(stubber._queue) == 4 - calls
    assert sleep.calls == []


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "LimitExceededException"),
        (500, "InternalServerErrorException"),
        (503, "ServiceUnavailable"),
    ],
)
async def test_throttling_and_5xx_retry_then_succeed(status: int, code: str) -> None:
    t, sleep = transport(max_attempts=4, base_backoff_s=0.1, max_backoff_s=1.0)
    stubber = stub_errors(t, [error_response(status, code)] * 2, then_ok=True)
    await t.send(ADDRESS, {}, "{}")
    stubber.assert_no_pending_responses()
    assert len(sleep.calls) == 2
    # exponential with jitter in [0.5, 1.0] of the nominal backoff
    assert 0.05 <= sleep.calls[0] <= 0.1
    assert 0.1 <= sleep.calls[1] <= 0.2


async def test_no_sleep_after_the_last_attempt() -> None:
    t, sleep = transport(max_attempts=3)
    stubber = stub_errors(t, [error_response(429, "LimitExceededException")] * 3)
    with pytest.raises(Throttled):
        await t.send(ADDRESS, {}, "{}")
    stubber.assert_no_pending_responses()
    assert len(sleep.calls) == 2  # between attempts only


async def test_retry_after_header_is_honoured() -> None:
    t, sleep = transport(max_attempts=2, base_backoff_s=0.01)
    stub_errors(t, [error_response(429, "LimitExceededException", retry_after="1.5")], then_ok=True)
    await t.send(ADDRESS, {}, "{}")
    assert sleep.calls == [1.5]


async def test_circuit_opens_after_repeated_failures_and_memory_is_bounded() -> None:
    t, _ = transport(max_attempts=1, breaker_threshold=2, breaker_cooldown_s=60)
    stub_errors(t, [error_response(500, "InternalServerErrorException")] * 2)
    for _ in range(2):
        with pytest.raises(Throttled):
            await t.send(ADDRESS, {}, "{}")
    with pytest.raises(CircuitOpen):
        await t.send(ADDRESS, {}, "{}")

    breaker = CircuitBreaker(threshold=1, cooldown_s=60, max_keys=100)
    for i in range(1000):
        breaker.failure(f"conn-{i}")
    assert len(breaker) == 100


def test_circuit_half_opens_after_cooldown(monkeypatch: pytest.MonkeyPatch) -> None:
    import connections.transports.apigw as apigw

    now = [1000.0]
    monkeypatch.setattr(apigw.time, "monotonic", lambda: now[0])
    breaker = CircuitBreaker(threshold=2, cooldown_s=10)
    breaker.failure("a")
    assert breaker.allow("a")
    breaker.failure("a")
    assert not breaker.allow("a")
    now[0] += 11
    assert breaker.allow("a")  # one trial
    breaker.success("a")
    assert breaker.allow("a")


async def test_close_deletes_the_connection(moto_dynamodb) -> None:
    from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

    t, _ = transport()
    await t.send(ADDRESS, {}, "{}")
    backend = apigatewaymanagementapi_backends["123456789012"]["eu-west-1"]
    assert "conn-1" in backend.connections
    await t.close(ADDRESS, 4403, "bye")
    assert "conn-1" not in backend.connections


async def test_aclose_waits_for_in_flight_sends(moto_dynamodb) -> None:
    t, _ = transport()
    sends = [
        asyncio.create_task(t.send(f"{ENDPOINT}/@connections/c{i}", {}, "{}")) for i in range(20)
    ]
    await asyncio.sleep(0)
    await t.aclose()
    await asyncio.gather(*sends)
    assert all(task.done() for task in sends)
    assert t._in_flight == set()


def test_client_cache_is_bounded() -> None:
    t = ApiGatewayTransport("apigw", max_clients=3)
    clients = [t.client(f"https://a{i}.execute-api.us-east-1.amazonaws.com/p") for i in range(5)]
    assert len(t._clients) == 3
    assert t.client("https://a4.execute-api.us-east-1.amazonaws.com/p") is clients[4]
