"""API Gateway WebSocket and DynamoDB Streams events replayed through the handlers,
end to end against moto (DynamoDB + the Management API)."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
from channels.layers import get_channel_layer

from connections.manager import Target, manager
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound
from storage.requests.model import RequestKey
from storage.requests.store import request_store
from streaming.actions.registry import ActionRegistry, action
from streaming.apigw import (
    decode_image,
    handle_stream_event,
    handle_websocket_event,
    runnable_keys,
    sessions,
)
from streaming.worker import Worker
from tests.connections.transports.test_apigw import posted_frames
from tests.support.apigw import token
from tests.support.hub import hold

DOMAIN = "abc123.execute-api.eu-west-1.amazonaws.com"

# Shapes as API Gateway sends them (trimmed of fields the handlers do not read).
CONNECT_EVENT = {
    "headers": {"Host": DOMAIN, "User-Agent": "pytest", "Sec-WebSocket-Version": "13"},
    "multiValueHeaders": {"Host": [DOMAIN]},
    "queryStringParameters": {"token": "TOKEN"},
    "multiValueQueryStringParameters": {"token": ["TOKEN"]},
    "requestContext": {
        "routeKey": "$connect",
        "eventType": "CONNECT",
        "extendedRequestId": "abc",
        "requestTimeEpoch": 1700000000000,
        "messageDirection": "IN",
        "stage": "prod",
        "connectedAt": 1700000000000,
        "requestId": "req-1",
        "domainName": DOMAIN,
        "connectionId": "Cid1=",
        "apiId": "abc123",
        "identity": {"sourceIp": "203.0.113.9", "userAgent": "pytest"},
    },
    "isBase64Encoded": False,
}
DEFAULT_EVENT = {
    "requestContext": {
        "routeKey": "$default",
        "messageId": "m1",
        "eventType": "MESSAGE",
        "messageDirection": "IN",
        "stage": "prod",
        "domainName": DOMAIN,
        "connectionId": "Cid1=",
        "apiId": "abc123",
    },
    "body": "{}",
    "isBase64Encoded": False,
}
DISCONNECT_EVENT = {
    "headers": {"Host": DOMAIN},
    "requestContext": {
        "routeKey": "$disconnect",
        "disconnectStatusCode": 1001,
        "eventType": "DISCONNECT",
        "stage": "prod",
        "domainName": DOMAIN,
        "connectionId": "Cid1=",
        "apiId": "abc123",
    },
    "isBase64Encoded": False,
}


def connect_event(tok: str | None, *, via: str = "query", connection_id: str = "Cid1=") -> dict:
    event = copy.deepcopy(CONNECT_EVENT)
    event["requestContext"]["connectionId"] = connection_id
    event["queryStringParameters"] = {}
    event["multiValueQueryStringParameters"] = {}
    if tok is not None and via == "query":
        event["queryStringParameters"] = {"token": tok}
        event["multiValueQueryStringParameters"] = {"token": [tok]}
    elif tok is not None and via == "auth_query":
        event["multiValueQueryStringParameters"] = {"Authorization": [f"Bearer {tok}"]}
    elif tok is not None and via == "header":
        event["headers"]["Authorization"] = f"Bearer {tok}"
    return event


def message_event(body: str, connection_id: str = "Cid1=", binary: bool = False) -> dict:
    event = copy.deepcopy(DEFAULT_EVENT)
    event["requestContext"]["connectionId"] = connection_id
    event["body"] = body
    event["isBase64Encoded"] = binary
    return event


def disconnect_event(connection_id: str = "Cid1=") -> dict:
    event = copy.deepcopy(DISCONNECT_EVENT)
    event["requestContext"]["connectionId"] = connection_id
    return event


@pytest.fixture(autouse=True)
def _fresh_sessions():
    sessions._items.clear()
    yield
    sessions._items.clear()


@pytest.mark.parametrize("via", ["query", "auth_query", "header"])
@pytest.mark.django_db(transaction=True)
async def test_connect_registers_an_apigw_connection(moto_dynamodb, apigw_tenant, via: str) -> None:
    result = await handle_websocket_event(connect_event(token(), via=via))
    assert result == {"statusCode": 200}
    info = connection_store.get("Cid1=")
    assert (info.tenant_id, info.user_id, info.transport) == ("acme", "u1", "apigw")
    assert info.address == f"https://{DOMAIN}/prod/@connections/Cid1="
    assert info.source_ip == "203.0.113.9"


@pytest.mark.parametrize(
    ("tok", "status"),
    [
        (None, 401),
        ("not-a-jwt", 401),
        ("EXPIRED", 401),
        ("OTHER_TENANT", 403),
        ("DISABLED_TENANT", 403),
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_connect_refusals_use_http_status(moto_dynamodb, apigw_tenant, tok, status) -> None:
    from connections.models import Tenant

    await Tenant.objects.acreate(id="off", active=False)
    tokens = {
        "EXPIRED": token(exp=1),
        "OTHER_TENANT": token(tenant="nobody"),
        "DISABLED_TENANT": token(tenant="off"),
    }
    result = await handle_websocket_event(connect_event(tokens.get(tok, tok)))
    assert result["statusCode"] == status
    assert "Traceback" not in result.get("body", "")
    with pytest.raises(NotFound):
        connection_store.get("Cid1=")


@pytest.mark.django_db(transaction=True)
async def test_connect_over_the_tenant_limit_is_429(moto_dynamodb, apigw_tenant) -> None:
    apigw_tenant.max_connections = 1
    await apigw_tenant.asave()
    assert (await handle_websocket_event(connect_event(token(), connection_id="A")))[
        "statusCode"
    ] == 200
    assert (await handle_websocket_event(connect_event(token(), connection_id="B")))[
        "statusCode"
    ] == 429


@pytest.mark.django_db(transaction=True)
async def test_connect_with_storage_down_is_503(apigw_tenant) -> None:
    from storage import base
    from storage.localserver import free_port

    base.configure(
        base.StoreConfig(endpoint_url=f"http://127.0.0.1:{free_port()}", max_retry_attempts=0)
    )
    result = await handle_websocket_event(connect_event(token()))
    assert result["statusCode"] == 503


@pytest.mark.django_db(transaction=True)
async def test_default_route_answers_through_post_to_connection(
    moto_dynamodb, apigw_tenant
) -> None:
    await handle_websocket_event(connect_event(token()))
    sessions._items.clear()  # a cold container reads the connection record
    bodies = [
        json.dumps({"id": "e1", "action": "echo", "payload": {"x": 1}}),
        "not json",
        json.dumps({"type": "ping"}),
    ]
    for body in bodies:
        assert (await handle_websocket_event(message_event(body)))["statusCode"] == 200
    frames = posted_frames("Cid1=")
    assert [f["type"] for f in frames] == ["response", "error", "pong"]
    assert frames[0]["data"] == {"echo": {"x": 1}}
    assert frames[1]["error"]["code"] == "INVALID_MESSAGE"


@pytest.mark.django_db(transaction=True)
async def test_binary_frame_is_invalid_message(moto_dynamodb, apigw_tenant) -> None:
    await handle_websocket_event(connect_event(token()))
    await handle_websocket_event(message_event("AAEC", binary=True))
    [frame] = posted_frames("Cid1=")
    assert frame["error"]["code"] == "INVALID_MESSAGE"


@pytest.mark.django_db(transaction=True)
async def test_default_from_unknown_connection_is_refused(moto_dynamodb, apigw_tenant) -> None:
    result = await handle_websocket_event(message_event("{}", connection_id="ghost"))
    assert result["statusCode"] == 403


@pytest.mark.parametrize("event", [{}, {"requestContext": {}}, {"requestContext": "x"}])
async def test_malformed_events_are_400(event) -> None:
    assert (await handle_websocket_event(event))["statusCode"] == 400


@pytest.mark.django_db(transaction=True)
async def test_disconnect_removes_connection_and_subscriptions(moto_dynamodb, apigw_tenant) -> None:
    from storage.subscription import subscription_store

    await handle_websocket_event(connect_event(token()))
    subscription_store.subscribe("acme#u1#r1", "Cid1=", "apigw", "x")
    assert (await handle_websocket_event(disconnect_event()))["statusCode"] == 200
    with pytest.raises(NotFound):
        connection_store.get("Cid1=")
    assert subscription_store.list_by_connection("Cid1=") == []


def stream_record(name: str, image: dict, event_id: str = "1") -> dict:
    return {
        "eventID": event_id,
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {
            "Keys": {"owner": image["owner"], "request_id": image["request_id"]},
            "NewImage": image,
            "SequenceNumber": event_id,
            "StreamViewType": "NEW_IMAGE",
        },
    }


def typed_image(request_id: str, status: str = "PENDING") -> dict:
    return {
        "owner": {"S": "acme#u1"},
        "request_id": {"S": request_id},
        "tenant_id": {"S": "acme"},
        "user_id": {"S": "u1"},
        "action": {"S": "count"},
        "status": {"S": status},
        "percentage": {"N": "0"},
        "attempts": {"N": "0"},
        "created_at": {"N": "1700000000000"},
        "payload": {"S": "{}"},
        "flag": {"BOOL": True},
        "tags": {"L": [{"S": "a"}]},
    }


def test_decode_image_handles_typed_values() -> None:
    item = decode_image(typed_image("r1"))
    assert item["request_id"] == "r1"
    assert item["percentage"] == 0
    assert item["flag"] is True
    assert item["tags"] == ["a"]


def test_runnable_keys_picks_new_and_retrying_only() -> None:
    event = {
        "Records": [
            stream_record("INSERT", typed_image("r1")),
            stream_record("MODIFY", typed_image("r2", "RETRYING")),
            stream_record("MODIFY", typed_image("r3", "PROCESSING")),
            stream_record("REMOVE", typed_image("r4")),
            {"eventName": "INSERT", "dynamodb": {"NewImage": {"status": {"Q": "?"}}}},
            {"eventName": "INSERT"},
        ]
    }
    assert [k.request_id for k in runnable_keys(event)] == ["r1", "r2"]


@pytest.mark.django_db(transaction=True)
async def test_stream_delivery_runs_each_request_once_even_when_duplicated(
    moto_dynamodb, apigw_tenant
) -> None:
    runs: list[str] = []
    actions = ActionRegistry()

    @action("count", mode="async", registry=actions)
    async def count(job, payload):
        runs.append(job.request_id)
        job.report(50, "half")
        return {"ok": True}

    await handle_websocket_event(connect_event(token()))
    info = connection_store.get("Cid1=")
    for rid in ("r1", "r2"):
        request_store.enqueue(
            tenant_id="acme",
            user_id="u1",
            request_id=rid,
            action="count",
            payload={},
            connection_id=info.connection_id,
            origin_transport="apigw",
            origin_address=info.address,
        )
    worker = Worker(actions=actions, lease_s=30)
    records = [
        stream_record("INSERT", typed_image("r1"), "1"),
        stream_record("INSERT", typed_image("r2"), "2"),
    ]
    first = await handle_stream_event({"Records": records}, worker=worker)
    again = await handle_stream_event({"Records": records}, worker=worker)  # at-least-once delivery
    assert first == {"claimed": 2, "seen": 2}
    assert again == {"claimed": 0, "seen": 2}
    assert sorted(runs) == ["r1", "r2"]
    frames = posted_frames("Cid1=")
    for rid in ("r1", "r2"):
        mine = [f for f in frames if f.get("request_id") == rid]
        assert [f["type"] for f in mine if f["type"] != "progress"] == ["complete"]
        assert all(f["type"] == "progress" for f in mine[:-1])
        assert request_store.get(RequestKey("acme", "u1", rid)).status == "COMPLETED"


@pytest.mark.django_db(transaction=True)
async def test_async_request_over_apigw_is_acknowledged_and_completed(
    moto_dynamodb, apigw_tenant
) -> None:
    """The full path: $default enqueues, a worker (woken through the channel layer)
    runs it, progress and complete reach the API Gateway connection."""
    actions = ActionRegistry()

    @action("slow", mode="async", registry=actions)
    async def slow(job, payload):
        for pct in (10, 60, 90):
            job.report(pct, f"at {pct}")
            await asyncio.sleep(0.12)
        return {"done": True}

    from streaming.actions.registry import registry as global_registry

    global_registry.register(actions.get("slow"))
    try:
        await handle_websocket_event(connect_event(token()))
        stop = asyncio.Event()
        worker = Worker(actions=actions, poll_interval_s=0.05)
        run = asyncio.create_task(worker.run(stop))
        await handle_websocket_event(message_event(json.dumps({"id": "s1", "action": "slow"})))
        for _ in range(200):
            if any(f["type"] == "complete" for f in posted_frames("Cid1=")):
                break
            await asyncio.sleep(0.02)
        stop.set()
        await run
    finally:
        global_registry.unregister("slow")
    types = [f["type"] for f in posted_frames("Cid1=")]
    assert types[0] == "acknowledgment"
    assert types[-1] == "complete"
    assert types.count("complete") == 1
    pcts = [f["percentage"] for f in posted_frames("Cid1=") if f["type"] == "progress"]
    assert pcts == sorted(pcts) and pcts[-1] == 100


@pytest.mark.django_db(transaction=True)
async def test_send_to_user_reaches_daphne_and_apigw_sockets(moto_dynamodb, apigw_tenant) -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await hold(connection_store.save(ConnectionInfo("daphne-1", "acme", "u1", "channels", channel)))
    await handle_websocket_event(connect_event(token()))
    report = await manager.send_to_user("acme", "u1", {"type": "message", "text": "hi"})
    assert report.delivered == 2
    message = await asyncio.wait_for(layer.receive(channel), 1)
    assert json.loads(message["text"])["text"] == "hi"
    assert posted_frames("Cid1=") == [{"type": "message", "text": "hi"}]


async def test_broadcast_to_1000_with_5_percent_gone(moto_dynamodb, monkeypatch) -> None:
    """Every live connection gets the frame once; every gone one is deleted."""
    from connections.transports import apigw as apigw_module
    from connections.transports.base import ConnectionGone

    gone = {f"c{i}" for i in range(0, 1000, 20)}
    posts: dict[str, int] = {}
    real_send = apigw_module.ApiGatewayTransport.send

    async def send(self, address, frame, text):
        connection_id = address.rsplit("/", 1)[-1]
        if connection_id in gone:
            raise ConnectionGone("gone")
        posts[connection_id] = posts.get(connection_id, 0) + 1

    monkeypatch.setattr(apigw_module.ApiGatewayTransport, "send", send)
    targets = []
    for i in range(1000):
        address = f"https://{DOMAIN}/prod/@connections/c{i}"
        connection_store.save(ConnectionInfo(f"c{i}", "acme", f"u{i}", "apigw", address))
        targets.append(Target(f"c{i}", "apigw", address))
    report = await manager.broadcast(targets, {"type": "message"})
    assert report.delivered == 950
    assert sorted(report.gone) == sorted(gone)
    assert set(posts.values()) == {1} and len(posts) == 950
    assert connection_store.count_by_tenant("acme") == 950
    monkeypatch.setattr(apigw_module.ApiGatewayTransport, "send", real_send)


async def test_shutdown_during_a_broadcast_returns(moto_dynamodb) -> None:
    """aclose() while sends are in flight returns once they end, without hanging."""
    from connections.transports import get_transport

    transport = get_transport("apigw")
    targets = [
        Target(f"x{i}", "apigw", f"https://{DOMAIN}/prod/@connections/x{i}") for i in range(200)
    ]
    broadcast = asyncio.create_task(manager.broadcast(targets, {"type": "message"}))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(transport.aclose(), 10)
    report = await asyncio.wait_for(broadcast, 10)
    assert report.delivered == 200
