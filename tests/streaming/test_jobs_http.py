"""The jobs API (/api/v1/requests, streaming/http_routes.py) through Django: tenant API
keys, the public record, every refusal as {"error": {code, message, details?,
retryable}} with its HTTP status, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.test import AsyncClient

from connections.models import ApiKey, Tenant
from storage.errors import StorageUnavailable
from storage.requests.store import request_store

REPORT = {"action": "generate_report", "payload": {"duration_s": 0, "steps": 1}}


@pytest.fixture
async def keys(moto_dynamodb: Any, tenant: Tenant) -> dict[str, str]:
    other = await Tenant.objects.acreate(id="other", name="Other")
    _, acme_key = await asyncio.to_thread(ApiKey.issue, tenant)
    _, other_key = await asyncio.to_thread(ApiKey.issue, other)
    return {"acme": acme_key, "other": other_key}


async def call(
    method: str, path: str, key: str | None, body: Any = None, raw: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = AsyncClient()
    if method == "GET":
        response = await client.get(path, headers=headers)
    else:
        data = raw if raw is not None else json.dumps(body or {})
        response = await client.post(path, data, content_type="application/json", headers=headers)
    return response.status_code, response.json()


@pytest.mark.django_db(transaction=True)
async def test_start_read_list_and_cancel(keys: dict[str, str]) -> None:
    key = keys["acme"]
    status, record = await call("POST", "/api/v1/requests", key, {"user_id": "u1", **REPORT})
    assert status == 202
    assert record["status"] == "PENDING" and record["action"] == "generate_report"
    assert set(record) == {
        "request_id", "action", "status", "percentage", "message",
        "created_at", "started_at", "ended_at",
    }  # fmt: skip
    request_id = record["request_id"]
    assert await call("GET", f"/api/v1/requests/u1/{request_id}", key) == (200, record)
    status, page = await call("GET", "/api/v1/requests/u1", key)
    assert (status, page) == (200, {"requests": [record], "cursor": None})
    status, cancelled = await call("POST", f"/api/v1/requests/u1/{request_id}/cancel", key)
    assert status == 200 and cancelled["status"] == "CANCELLED"
    assert cancelled["error"] == {"code": "CANCELLED", "message": "Request cancelled"}


@pytest.mark.django_db(transaction=True)
async def test_a_repeated_id_is_409_with_the_existing_status(keys: dict[str, str]) -> None:
    body = {"user_id": "u1", "id": "export-1", **REPORT}
    assert (await call("POST", "/api/v1/requests", keys["acme"], body))[0] == 202
    status, answer = await call("POST", "/api/v1/requests", keys["acme"], body)
    assert status == 409
    assert answer == {
        "error": {
            "code": "DUPLICATE_REQUEST",
            "message": "A request with this id already exists",
            "details": {"status": "PENDING"},
            "retryable": False,
        }
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/requests/u1/{id}"),
        ("POST", "/api/v1/requests/u1/{id}/cancel"),
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_another_tenants_key_finds_nothing(
    keys: dict[str, str], method: str, path: str
) -> None:
    body = {"user_id": "u1", **REPORT}
    _, record = await call("POST", "/api/v1/requests", keys["acme"], body)
    status, answer = await call(method, path.format(id=record["request_id"]), keys["other"])
    assert status == 404 and answer["error"]["code"] == "NOT_FOUND"
    assert await call("GET", "/api/v1/requests/u1", keys["other"]) == (
        200,
        {"requests": [], "cursor": None},
    )
    _, still = await call("GET", f"/api/v1/requests/u1/{record['request_id']}", keys["acme"])
    assert still["status"] == "PENDING"  # the other tenant's cancel changed nothing


@pytest.mark.django_db(transaction=True)
async def test_list_pages_with_a_cursor_and_a_status_filter(keys: dict[str, str]) -> None:
    key = keys["acme"]
    ids = []
    for _ in range(5):
        _, record = await call("POST", "/api/v1/requests", key, {"user_id": "u1", **REPORT})
        ids.append(record["request_id"])
    await call("POST", f"/api/v1/requests/u1/{ids[1]}/cancel", key)
    seen, cursor = [], ""
    while cursor is not None:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        status, page = await call("GET", f"/api/v1/requests/u1{query}", key)
        assert status == 200 and len(page["requests"]) <= 2
        seen += [r["request_id"] for r in page["requests"]]
        cursor = page["cursor"]
    assert seen == ids[::-1]
    _, cancelled = await call("GET", "/api/v1/requests/u1?status=CANCELLED", key)
    assert [r["request_id"] for r in cancelled["requests"]] == [ids[1]]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "field"),
    [
        ("POST", "/api/v1/requests", "{not json", 400, "VALIDATION_ERROR", None),
        ("POST", "/api/v1/requests", [1], 400, "VALIDATION_ERROR", "body"),
        ("POST", "/api/v1/requests", {**REPORT}, 400, "VALIDATION_ERROR", "body.user_id"),
        (
            "POST",
            "/api/v1/requests",
            {"user_id": "u1", **REPORT, "colour": "red"},
            400,
            "VALIDATION_ERROR",
            "body.colour",
        ),
        (
            "POST",
            "/api/v1/requests",
            {"user_id": "u1", "action": "generate_report", "payload": {"steps": 0}},
            400,
            "VALIDATION_ERROR",
            "payload.steps",
        ),
        (
            "POST",
            "/api/v1/requests",
            {"user_id": "u1", "action": "no.such"},
            400,
            "INVALID_ACTION",
            None,
        ),
        (
            "POST",
            "/api/v1/requests",
            {"user_id": "u1", "action": "echo"},
            400,
            "INVALID_ACTION",
            None,
        ),
        ("GET", "/api/v1/requests/u1?limit=0", None, 400, "VALIDATION_ERROR", "query.limit"),
        ("GET", "/api/v1/requests/u1?status=DONE", None, 400, "VALIDATION_ERROR", "query.status"),
        ("GET", "/api/v1/requests/u1?cursor=zzz", None, 400, "VALIDATION_ERROR", "cursor"),
        ("GET", "/api/v1/requests/u1/missing", None, 404, "NOT_FOUND", None),
        ("POST", "/api/v1/requests/u1/missing/cancel", None, 404, "NOT_FOUND", None),
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_refusals(
    keys: dict[str, str],
    method: str,
    path: str,
    body: Any,
    status: int,
    code: str,
    field: str | None,
) -> None:
    raw = body if isinstance(body, str) else None
    got, answer = await call(method, path, keys["acme"], body, raw=raw)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert answer["error"]["retryable"] is False
    assert set(answer["error"]) <= {"code", "message", "details", "retryable"}
    if field is not None:
        assert field in [e["field"] for e in answer["error"]["details"]["errors"]]
    assert "pydantic" not in json.dumps(answer) and "Traceback" not in json.dumps(answer)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer sk_wrongwrongwrongwrong", "Basic abc", "Bearer"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/requests"),
        ("GET", "/api/v1/requests/u1"),
        ("GET", "/api/v1/requests/u1/r"),
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_a_missing_or_bad_key_is_401(
    keys: dict[str, str], authorization: str | None, method: str, path: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    client = AsyncClient()
    if method == "GET":
        response = await client.get(path, headers=headers)
    else:
        response = await client.post(
            path, {"user_id": "u1", **REPORT}, content_type="application/json", headers=headers
        )
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "UNAUTHORIZED",
            "message": "A valid API key is required",
            "retryable": False,
        }
    }


@pytest.mark.django_db(transaction=True)
async def test_a_full_quota_is_429_and_retryable(keys: dict[str, str], tenant: Tenant) -> None:
    tenant.max_active_requests_per_user = 1
    await tenant.asave()
    body = {"user_id": "u1", **REPORT}
    assert (await call("POST", "/api/v1/requests", keys["acme"], body))[0] == 202
    status, answer = await call("POST", "/api/v1/requests", keys["acme"], body)
    assert status == 429
    assert answer["error"]["code"] == "QUOTA_EXCEEDED" and answer["error"]["retryable"] is True


@pytest.mark.django_db(transaction=True)
async def test_storage_down_is_503_and_retryable(
    keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise StorageUnavailable("injected")

    monkeypatch.setattr(request_store, "list_by_user", down)
    status, answer = await call("GET", "/api/v1/requests/u1", keys["acme"])
    assert status == 503
    assert answer["error"] == {
        "code": "SERVICE_UNAVAILABLE",
        "message": "Service temporarily unavailable, try again later",
        "retryable": True,
    }


@pytest.mark.django_db(transaction=True)
async def test_openapi_lists_every_endpoint(tenant: Tenant) -> None:
    response = await AsyncClient().get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert {(path, method) for path, item in document["paths"].items() for method in item} == {
        ("/api/v1/publish", "post"),
        ("/api/v1/requests", "post"),
        ("/api/v1/requests/{user_id}", "get"),
        ("/api/v1/requests/{user_id}/{request_id}", "get"),
        ("/api/v1/requests/{user_id}/{request_id}/cancel", "post"),
    }
    assert document["components"]["securitySchemes"] == {
        "TenantApiKey": {"type": "http", "scheme": "bearer"}
    }


@pytest.mark.parametrize(
    ("path", "auth", "chunks", "status", "code", "reads"),
    [
        ("/api/v1/requests", None, [b"x" * 4096] * 10, 401, "UNAUTHORIZED", 0),
        ("/api/v1/requests/u1/r/cancel", "bad", [b"x" * 4096] * 10, 401, "UNAUTHORIZED", 0),
        ("/api/v1/requests", "KEY", [b"x" * 600] * 10, 413, "PAYLOAD_TOO_LARGE", 2),
        ("/api/v1/requests/u1/r/cancel", "KEY", [b"x" * 600] * 10, 413, "PAYLOAD_TOO_LARGE", 2),
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_the_body_guard_covers_the_jobs_api(
    keys: dict[str, str],
    settings: Any,
    path: str,
    auth: str | None,
    chunks: list[bytes],
    status: int,
    code: str,
    reads: int,
) -> None:
    """Through the ASGI application: the caller first, then at most the cap is read."""
    from tests.streaming.test_body_guard import CAP, Upload

    settings.STREAMER_MAX_HTTP_BODY_BYTES = CAP
    headers = {"content-type": "application/json"}
    if auth is not None:
        headers["authorization"] = f"Bearer {keys['acme'] if auth == 'KEY' else 'sk_' + 'x' * 20}"
    upload = Upload(chunks)
    got, body = await upload.post(path, headers)
    assert (got, upload.read) == (status, reads)
    assert body["error"]["code"] == code and body["error"]["retryable"] is False


@pytest.mark.django_db(transaction=True)
async def test_the_views_check_the_size_without_the_guard(
    keys: dict[str, str], settings: Any
) -> None:
    settings.STREAMER_MAX_HTTP_BODY_BYTES = 100
    body = {"user_id": "u1", **REPORT, "metadata": {"note": "x" * 200}}
    status, answer = await call("POST", "/api/v1/requests", keys["acme"], body)
    assert status == 413 and answer["error"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["nobody"], "no tenant 'nobody'"),
        (["acme", "--name", "n" * 101], "at most 100"),
    ],
)
@pytest.mark.django_db
def test_create_api_key_refuses(tenant: Tenant, args: list[str], error: str) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=error):
        call_command("create_api_key", *args)
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_create_api_key_prints_a_working_key_once_on_the_last_line(tenant: Tenant) -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_key", "acme", "--name", "ci", stdout=out)
    secret = out.getvalue().splitlines()[-1]
    assert out.getvalue().count(secret) == 1
    key = ApiKey.authenticate(secret)
    assert key is not None and (key.tenant_id, key.name) == ("acme", "ci")
    assert secret not in key.key_hash
