"""Server-side publishing: POST /api/v1/publish (per-tenant API keys), send_message,
POST /apigw/events and the Lambda entry points."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from channels.layers import get_channel_layer
from django.core.management import CommandError, call_command
from django.test import AsyncClient

from connections.models import ApiKey, Tenant
from connections.publishing import PublishError, build_frame
from storage.connection import ConnectionInfo, connection_store
from tests.streaming.test_apigw import connect_event
from tests.support.apigw import token
from tests.support.hub import hold


async def live_socket(connection_id: str, tenant: str = "acme", user: str = "u1") -> str:
    """A registered connection whose socket is a channel we can read (stored, and held
    by this process's hub like a consumer's socket)."""
    channel = await get_channel_layer().new_channel()
    await hold(
        connection_store.save(ConnectionInfo(connection_id, tenant, user, "channels", channel))
    )
    return channel


async def received(channel: str) -> dict | None:
    try:
        message = await asyncio.wait_for(get_channel_layer().receive(channel), 0.5)
    except TimeoutError:
        return None
    return json.loads(message["text"])


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ([1], "JSON object"),
        ({"type": "progress"}, "reserved"),
        ({"type": "complete"}, "reserved"),
        ({"type": ""}, "short string"),
        ({"type": 5}, "short string"),
        ({"blob": "x" * (129 * 1024)}, "128 KiB"),
    ],
)
def test_build_frame_rejects(body, error) -> None:
    with pytest.raises(PublishError, match=error):
        build_frame(body)


def test_build_frame_defaults_type_and_sets_timestamp() -> None:
    frame = build_frame({"text": "hi", "request_id": "forged", "timestamp": 1})
    assert frame["type"] == "message"
    assert "request_id" not in frame
    assert frame["timestamp"] > 1


@pytest.mark.django_db(transaction=True)
async def test_api_key_is_shown_once_stored_hashed_and_revocable(apigw_tenant) -> None:
    row, secret = await asyncio.to_thread(ApiKey.issue, apigw_tenant, "ci")
    assert secret.startswith("sk_") and secret not in row.key_hash
    assert (await asyncio.to_thread(ApiKey.authenticate, secret)).pk == row.pk
    assert await asyncio.to_thread(ApiKey.authenticate, secret[:-1] + "x") is None
    assert await asyncio.to_thread(ApiKey.authenticate, "sk_short") is None
    from django.utils import timezone

    row.revoked_at = timezone.now()
    await row.asave()
    assert await asyncio.to_thread(ApiKey.authenticate, secret) is None


@pytest.mark.parametrize(
    ("target", "reached"),
    [
        ({"connection_id": "a1"}, {"a1"}),
        ({"user_id": "u1"}, {"a1", "a2"}),
        ({}, {"a1", "a2", "a3"}),
        ({"connection_id": "b1"}, set()),  # another tenant's connection: not reachable
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_publish_api_reaches_only_its_own_tenant(
    moto_dynamodb, apigw_tenant, target, reached
) -> None:
    await Tenant.objects.acreate(id="other")
    channels = {
        "a1": await live_socket("a1", user="u1"),
        "a2": await live_socket("a2", user="u1"),
        "a3": await live_socket("a3", user="u2"),
        "b1": await live_socket("b1", tenant="other", user="u1"),
    }
    _, secret = await asyncio.to_thread(ApiKey.issue, apigw_tenant)
    response = await AsyncClient().post(
        "/api/v1/publish",
        {**target, "frame": {"type": "notice", "text": "hi"}},
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 200
    assert response.json()["delivered"] == len(reached)
    got = {cid for cid, ch in channels.items() if (await received(ch)) is not None}
    assert got == reached


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, {"frame": {}}, 401),
        ({"Authorization": "Bearer sk_wrongwrongwrongwrong"}, {"frame": {}}, 401),
        ({"Authorization": "Basic abc"}, {"frame": {}}, 401),
        ("KEY", "not json", 400),
        ("KEY", {"frame": {"type": "error"}}, 400),
        ("KEY", {"frame": {}, "user_id": "u", "connection_id": "c"}, 400),
        ("KEY", {"frame": {}, "user_id": ""}, 400),
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_publish_api_refusals(moto_dynamodb, apigw_tenant, headers, body, status) -> None:
    _, secret = await asyncio.to_thread(ApiKey.issue, apigw_tenant)
    if headers == "KEY":
        headers = {"Authorization": f"Bearer {secret}"}
    data = body if isinstance(body, str) else json.dumps(body)
    response = await AsyncClient().post(
        "/api/v1/publish", data, content_type="application/json", headers=headers
    )
    assert response.status_code == status
    assert set(response.json()["error"]) == {"code", "message"}


@pytest.mark.django_db(transaction=True)
async def test_publish_api_refuses_keys_of_disabled_tenants(moto_dynamodb, apigw_tenant) -> None:
    _, secret = await asyncio.to_thread(ApiKey.issue, apigw_tenant)
    apigw_tenant.active = False
    await apigw_tenant.asave()
    response = await AsyncClient().post(
        "/api/v1/publish",
        {"frame": {}},
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 401


@pytest.mark.django_db(transaction=True)
async def test_publish_get_is_not_allowed(apigw_tenant) -> None:
    assert (await AsyncClient().get("/api/v1/publish")).status_code == 405


@pytest.mark.parametrize(
    ("args", "reached"),
    [
        (["--connection", "a1"], {"a1"}),
        (["--user", "acme:u1"], {"a1", "a2"}),
        (["--tenant", "acme"], {"a1", "a2"}),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_send_message_command(moto_dynamodb, apigw_tenant, args, reached) -> None:
    from asgiref.sync import async_to_sync

    channels = {"a1": async_to_sync(live_socket)("a1"), "a2": async_to_sync(live_socket)("a2")}
    out = __import__("io").StringIO()
    call_command("send_message", *args, "--json", '{"text": "hello"}', stdout=out)
    assert f"delivered={len(reached)}" in out.getvalue()
    # the command ran in its own event loop; the in-memory layer kept the messages
    got = {cid for cid, ch in channels.items() if async_to_sync(received)(ch) is not None}
    assert got == reached


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--connection", "nope", "--json", "{}"], "no such connection"),
        (["--user", "acme", "--json", "{}"], "TENANT:USER"),
        (["--tenant", "acme", "--json", "{"], "not JSON"),
        (["--tenant", "acme", "--json", '{"type": "progress"}'], "reserved"),
        (["--tenant", "empty", "--json", "{}"], "no connection received"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_send_message_failures(moto_dynamodb, apigw_tenant, args, error) -> None:
    with pytest.raises(CommandError, match=error):
        call_command("send_message", *args)


@pytest.mark.parametrize(
    ("secret", "status"),
    [(None, 403), ("wrong", 403), ("shared-secret", 200)],
)
@pytest.mark.django_db(transaction=True)
async def test_apigw_events_endpoint_needs_the_shared_secret(
    moto_dynamodb, apigw_tenant, secret, status
) -> None:
    headers = {"X-Streamer-Secret": secret} if secret else {}
    response = await AsyncClient().post(
        "/apigw/events",
        json.dumps(connect_event(token())),
        content_type="application/json",
        headers=headers,
    )
    assert response.status_code == status
    if status == 200:
        assert response.json() == {"statusCode": 200}
        assert connection_store.get("Cid1=").transport == "apigw"


@pytest.mark.django_db(transaction=True)
async def test_apigw_events_endpoint_refuses_everything_without_a_configured_secret(
    settings, apigw_tenant
) -> None:
    settings.STREAMER_APIGW_SHARED_SECRET = ""
    response = await AsyncClient().post(
        "/apigw/events", "{}", content_type="application/json", headers={"X-Streamer-Secret": ""}
    )
    assert response.status_code == 403


@pytest.mark.django_db(transaction=True)
async def test_apigw_events_endpoint_bad_body(apigw_tenant) -> None:
    response = await AsyncClient().post(
        "/apigw/events",
        "[1]",
        content_type="application/json",
        headers={"X-Streamer-Secret": "shared-secret"},
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("env", "ok"),
    [
        ({"STREAMER_JWT_SECRET": "s" * 32}, True),
        ({"STREAMER_JWT_SECRET": ""}, False),
    ],
)
def test_lambda_handlers_fail_fast_on_missing_settings(env, ok, tmp_path) -> None:
    """Import in a fresh interpreter, as a Lambda cold start would."""
    import os

    full_env = {**os.environ, "DJANGO_DEBUG": "0", "DATA_DIR": str(tmp_path), **env}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import streaming.lambda_handlers as h; print(h.websocket.__name__)",
        ],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if ok:
        assert result.returncode == 0, result.stderr
        assert "websocket" in result.stdout
    else:
        assert result.returncode != 0
        assert "STREAMER_JWT_SECRET or STREAMER_JWT_PUBLIC_KEY" in result.stderr


@pytest.fixture
def lambda_module(settings):
    import importlib

    from tests.support.apigw import SECRET

    settings.STREAMER_JWT_SECRET = SECRET
    return importlib.import_module("streaming.lambda_handlers")


@pytest.mark.django_db(transaction=True)
def test_lambda_websocket_stream_and_sweep_handlers(
    moto_dynamodb, apigw_tenant, lambda_module
) -> None:
    """The Lambda functions run the async handlers in their own event loop."""
    from storage.requests.model import RequestKey
    from storage.requests.store import request_store
    from tests.streaming.test_apigw import message_event, stream_record, typed_image

    assert lambda_module.websocket(connect_event(token()))["statusCode"] == 200
    body = json.dumps(
        {"id": "g1", "action": "generate_report", "payload": {"duration_s": 0, "steps": 2}}
    )
    assert lambda_module.websocket(message_event(body))["statusCode"] == 200
    image = typed_image("g1")
    image["action"] = {"S": "generate_report"}
    assert lambda_module.stream({"Records": [stream_record("INSERT", image)]}) == {
        "claimed": 1,
        "seen": 1,
    }
    assert request_store.get(RequestKey("acme", "u1", "g1")).status == "COMPLETED"
    assert lambda_module.sweep({}) == {"claimed": 0, "expired": 0}


def test_lambda_check_settings_lists_every_problem(lambda_module, settings) -> None:
    from django.core.exceptions import ImproperlyConfigured

    settings.STREAMER_JWT_SECRET = ""
    settings.STREAMER_JWT_PUBLIC_KEY = ""
    settings.STREAMER_JWT_ALGORITHMS = []
    settings.STREAMER_TABLE_PREFIX = ""
    with pytest.raises(ImproperlyConfigured) as info:
        lambda_module.check_settings()
    for word in ("STREAMER_JWT_SECRET", "STREAMER_JWT_ALGORITHMS", "STREAMER_TABLE_PREFIX"):
        assert word in str(info.value)
