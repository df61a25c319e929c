"""Forged API Gateway events: an event's domainName/stage never picks the host we post
to, and an event never acts for a connection of another transport or another API."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
from channels.layers import get_channel_layer

from connections.transports.apigw_endpoint import (
    EndpointPolicy,
    EndpointRefused,
    check_connection_id,
)
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound
from streaming.apigw import handle_websocket_event, sessions
from tests.connections.transports.test_apigw import posted_frames, transport
from tests.streaming.test_apigw import connect_event, message_event
from tests.support.apigw import token

AWS_HOST = "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"
OTHER_API = "zzzzzzzzzz.execute-api.eu-west-1.amazonaws.com"
CONFIGURED = f"https://{AWS_HOST}/prod"


@pytest.mark.parametrize(
    ("policy", "domain", "stage", "expected"),
    [
        (EndpointPolicy(), AWS_HOST, "prod", f"https://{AWS_HOST}/prod"),
        (EndpointPolicy(), AWS_HOST.upper(), "v1_beta-2", f"https://{AWS_HOST}/v1_beta-2"),
        (EndpointPolicy(), "abc.execute-api.cn-north-1.amazonaws.com.cn", "p", None),
        (EndpointPolicy(), "abc.execute-api.us-gov-west-1.amazonaws.com", "p", None),
        (EndpointPolicy(allowed_hosts=frozenset({"a1b2c3d4e5"})), AWS_HOST, "prod", None),
        (EndpointPolicy(allowed_hosts=frozenset({"ws.example.com"})), "ws.example.com", "v1", None),
        (EndpointPolicy(CONFIGURED), "evil.example.com", "x/../y", CONFIGURED),
        (EndpointPolicy(CONFIGURED), None, None, CONFIGURED),
    ],
)
def test_allowed_endpoints(policy, domain, stage, expected) -> None:
    result = policy.endpoint_for(domain, stage)
    assert result == (expected or f"https://{domain.lower()}/{stage}")


@pytest.mark.parametrize(
    ("policy", "domain", "stage"),
    [
        (EndpointPolicy(), "evil.example.com", "prod"),
        (EndpointPolicy(), "execute-api.eu-west-1.amazonaws.com", "prod"),
        (EndpointPolicy(), f"{AWS_HOST}.evil.example.com", "prod"),
        (EndpointPolicy(), f"x.{AWS_HOST}", "prod"),
        (EndpointPolicy(), "abc.execute-api.eu-west-1.amazonaws.com.evil.net", "prod"),
        (EndpointPolicy(), f"{AWS_HOST}:8443", "prod"),
        (EndpointPolicy(), f"user@{AWS_HOST}", "prod"),
        (EndpointPolicy(), f"evil.example.com#{AWS_HOST}", "prod"),
        (EndpointPolicy(), f"evil.example.com/{AWS_HOST}", "prod"),
        (EndpointPolicy(), AWS_HOST, ""),
        (EndpointPolicy(), AWS_HOST, "prod/../../evil"),
        (EndpointPolicy(), AWS_HOST, "prod?x=1"),
        (EndpointPolicy(), AWS_HOST, "p" * 129),
        (EndpointPolicy(), "", "prod"),
        (EndpointPolicy(), None, "prod"),
        (EndpointPolicy(), AWS_HOST, 7),
        (EndpointPolicy(allowed_hosts=frozenset({"a1b2c3d4e5"})), OTHER_API, "prod"),
        (EndpointPolicy(allowed_hosts=frozenset({"ws.example.com"})), "evil.example.com", "v1"),
    ],
)
def test_forged_endpoints_are_refused(policy, domain, stage) -> None:
    with pytest.raises(EndpointRefused):
        policy.endpoint_for(domain, stage)


@pytest.mark.parametrize(
    "endpoint",
    [
        f"http://{AWS_HOST}/prod",
        f"https://{AWS_HOST}/prod/",
        f"https://{AWS_HOST}:443/prod",
        f"https://{AWS_HOST}/prod#x",
        "https://evil.example.com/prod",
    ],
)
def test_check_refuses_urls_that_are_not_a_management_endpoint(endpoint: str) -> None:
    with pytest.raises(EndpointRefused):
        EndpointPolicy().check(endpoint)


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [(CONFIGURED, True), (CONFIGURED + "/", True), (f"https://{OTHER_API}/prod", False)],
)
def test_with_a_configured_endpoint_nothing_else_is_allowed(endpoint: str, ok: bool) -> None:
    policy = EndpointPolicy(CONFIGURED)
    if ok:
        assert policy.check(endpoint) == endpoint
    else:
        with pytest.raises(EndpointRefused):
            policy.check(endpoint)


def test_policy_from_settings(settings) -> None:
    settings.STREAMER_APIGW_ENDPOINT = CONFIGURED + "/"
    settings.STREAMER_APIGW_ALLOWED_HOSTS = ["WS.Example.com", "a1b2c3d4e5"]
    assert EndpointPolicy.from_settings() == EndpointPolicy(
        CONFIGURED, frozenset({"ws.example.com", "a1b2c3d4e5"})
    )


@pytest.mark.parametrize(
    ("connection_id", "ok"),
    [
        ("Cid1=", True),
        ("L0SM9cOFvHcCIhw=", True),
        ("a+b/c_d-e", True),
        ("", False),
        ("x/@connections/y", False),
        ("a b", False),
        ("c" * 129, False),
        (None, False),
    ],
)
def test_connection_ids(connection_id, ok: bool) -> None:
    if ok:
        assert check_connection_id(connection_id) == connection_id
    else:
        with pytest.raises(EndpointRefused):
            check_connection_id(connection_id)


@pytest.mark.parametrize(
    "address",
    [
        "https://evil.example.com/prod/@connections/c1",
        "http://127.0.0.1:9/prod/@connections/c1",
        f"https://{AWS_HOST}/a/b/@connections/c1",
    ],
)
async def test_transport_never_posts_to_a_forged_address(address: str) -> None:
    """A forged address that reached a record anyway is refused before any client or
    HTTP call exists; a legitimate one still gets its frame."""
    t, _ = transport()
    frame = {"type": "message", "text": "secret"}
    with pytest.raises(EndpointRefused):
        await t.send(address, frame, json.dumps(frame))
    with pytest.raises(EndpointRefused):
        await t.close(address, 1000)
    assert len(t._clients) == 0


async def test_transport_with_a_configured_endpoint_refuses_others(moto_dynamodb, settings) -> None:
    settings.STREAMER_APIGW_ENDPOINT = CONFIGURED
    t, _ = transport()
    frame = {"type": "message", "text": "hi"}
    with pytest.raises(EndpointRefused):
        await t.send(f"https://{OTHER_API}/prod/@connections/c1", frame, json.dumps(frame))
    await t.send(f"{CONFIGURED}/@connections/c1", frame, json.dumps(frame))
    assert posted_frames("c1") == [frame]


@pytest.fixture(autouse=True)
def _fresh_sessions():
    sessions._items.clear()
    yield
    sessions._items.clear()


def forged(event: dict, **context) -> dict:
    event = copy.deepcopy(event)
    event["requestContext"].update(context)
    return event


@pytest.mark.parametrize(
    "context",
    [
        {"domainName": "evil.example.com"},
        {"domainName": "127.0.0.1:9000"},
        {"stage": "prod/../../x"},
        {"domainName": None},
        {"connectionId": "x/@connections/y"},
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_connect_with_a_forged_endpoint_is_refused_and_stores_nothing(
    moto_dynamodb, apigw_tenant, context
) -> None:
    result = await handle_websocket_event(forged(connect_event(token()), **context))
    assert result == {"statusCode": 403, "body": "Unknown API Gateway endpoint"}
    connection_id = context.get("connectionId", "Cid1=")
    with pytest.raises(NotFound):
        connection_store.get(connection_id)


@pytest.mark.django_db(transaction=True)
async def test_connect_outside_the_allowed_api_ids_is_refused(
    moto_dynamodb, apigw_tenant, settings
):
    settings.STREAMER_APIGW_ALLOWED_HOSTS = ["a1b2c3d4e5"]
    refused = await handle_websocket_event(connect_event(token()))  # the api id abc123
    assert refused["statusCode"] == 403
    ok = await handle_websocket_event(forged(connect_event(token()), domainName=AWS_HOST))
    assert ok == {"statusCode": 200}
    assert connection_store.get("Cid1=").address == f"https://{AWS_HOST}/prod/@connections/Cid1="


@pytest.mark.django_db(transaction=True)
async def test_configured_endpoint_wins_over_the_event(
    moto_dynamodb, apigw_tenant, settings
) -> None:
    settings.STREAMER_APIGW_ENDPOINT = CONFIGURED
    event = forged(connect_event(token()), domainName="evil.example.com", stage="x")
    assert await handle_websocket_event(event) == {"statusCode": 200}
    assert connection_store.get("Cid1=").address == f"{CONFIGURED}/@connections/Cid1="


@pytest.mark.django_db(transaction=True)
async def test_default_naming_a_channels_connection_is_refused(moto_dynamodb, apigw_tenant) -> None:
    """A $default event naming a daphne socket's id must not act as that socket's user:
    nothing runs, nothing reaches the socket, the record is untouched."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    victim = ConnectionInfo("daphne-1", "acme", "victim", "channels", channel)
    connection_store.save(victim)
    body = json.dumps({"id": "e1", "action": "echo", "payload": {"x": 1}})
    result = await handle_websocket_event(message_event(body, connection_id="daphne-1"))
    assert result == {"statusCode": 403, "body": "Unknown connection"}
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.2)
    assert connection_store.get("daphne-1").transport == "channels"


@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.django_db(transaction=True)
async def test_default_from_another_api_for_an_apigw_connection_is_refused(
    moto_dynamodb, apigw_tenant, warm: bool
) -> None:
    """The record's endpoint must be the event's own: another API (or a forged domain)
    naming our connection id gets 403, warm container or cold, and posts nothing."""
    assert (await handle_websocket_event(connect_event(token())))["statusCode"] == 200
    if not warm:
        sessions._items.clear()
    body = json.dumps({"id": "e1", "action": "echo"})
    for context in (
        {"domainName": OTHER_API},
        {"stage": "dev"},
        {"domainName": "evil.example.com"},
    ):
        result = await handle_websocket_event(forged(message_event(body), **context))
        assert result == {"statusCode": 403, "body": "Unknown connection"}
    assert posted_frames_or_none("Cid1=") == []
    # The real socket still works.
    assert (await handle_websocket_event(message_event(body)))["statusCode"] == 200
    assert [f["type"] for f in posted_frames("Cid1=")] == ["response"]


def posted_frames_or_none(connection_id: str) -> list[dict]:
    try:
        return posted_frames(connection_id)
    except KeyError:
        return []


@pytest.mark.parametrize(
    ("record", "context"),
    [
        (("channels", "specific.channel!abc"), {}),
        (("apigw", f"https://{OTHER_API}/prod/@connections/Cid1="), {}),
        (
            ("apigw", "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/@connections/Cid1="),
            {"stage": "dev"},
        ),
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_disconnect_naming_another_transports_connection_removes_nothing(
    moto_dynamodb, apigw_tenant, record, context
) -> None:
    from storage.subscription import subscription_store
    from tests.streaming.test_apigw import disconnect_event

    transport_name, address = record
    connection_store.save(ConnectionInfo("Cid1=", "acme", "victim", transport_name, address))
    subscription_store.subscribe("acme#victim#r1", "Cid1=", transport_name, address)
    result = await handle_websocket_event(forged(disconnect_event(), **context))
    assert result == {"statusCode": 200}
    assert connection_store.get("Cid1=").address == address
    assert [s.request_key for s in subscription_store.list_by_connection("Cid1=")] == [
        "acme#victim#r1"
    ]


@pytest.mark.django_db(transaction=True)
async def test_disconnect_with_a_forged_endpoint_is_refused(moto_dynamodb, apigw_tenant) -> None:
    from tests.streaming.test_apigw import disconnect_event

    assert (await handle_websocket_event(connect_event(token())))["statusCode"] == 200
    event = forged(disconnect_event(), domainName="evil.example.com")
    assert (await handle_websocket_event(event))["statusCode"] == 403
    assert connection_store.get("Cid1=").transport == "apigw"
    assert (await handle_websocket_event(disconnect_event()))["statusCode"] == 200
    with pytest.raises(NotFound):
        connection_store.get("Cid1=")
