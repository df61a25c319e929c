"""The jobs API and the Django Tasks backend end to end: a real server process (with its
in-process worker) on dynalite, called over HTTP with tenant API keys minted by
``manage.py create_api_key``, and followed live by the user's WebSocket."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from bench.stack import MANAGE, PYTHON, REPO_ROOT, Environment, Stack, running_stack

pytestmark = pytest.mark.e2e

REPORT = {"duration_s": 1.5, "steps": 5, "max_requests": 0, "include_connections": False}


@pytest.fixture(scope="module")
def stack(e2e: Environment) -> Iterator[Stack]:
    with running_stack(e2e, "jobs") as running:
        yield running


def manage(stack: Stack, *args: str) -> str:
    """Run a manage.py command against the stack's storage; its stdout."""
    done = subprocess.run(
        [PYTHON, MANAGE, *args],
        env=stack.env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, str]:
    """One API key per tenant: the last line create_api_key prints."""
    return {
        tenant: manage(stack, "create_api_key", tenant, "--name", "e2e").splitlines()[-1]
        for tenant in ("demo", "other")
    }


def http(
    stack: Stack, method: str, path: str, key: str | None, body: Any = None, raw: bytes = b""
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = raw or (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(stack.servers[0].url + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def call(stack: Stack, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(http, stack, *args, **kwargs)


async def test_a_request_started_over_http_is_followed_by_its_users_socket(
    stack: Stack, keys: dict[str, str]
) -> None:
    user = stack.user("alice")
    body = {"user_id": user, "action": "generate_report", "payload": REPORT, "id": "http-1"}
    status, record = await call(stack, "POST", "/api/v1/requests", keys["demo"], body)
    assert status == 202 and record["request_id"] == "http-1", record
    async with stack.client("alice") as socket:
        answer = await socket.call("request.status", {"request_id": "http-1"})
        assert answer["type"] == "response"
        end = await socket.terminal("http-1")
        assert end["type"] == "complete" and end["result"]["steps"] == 5
    status, again = await call(stack, "POST", "/api/v1/requests", keys["demo"], body)
    assert status == 409 and again["error"]["code"] == "DUPLICATE_REQUEST", again
    assert again["error"]["details"] == {"status": "COMPLETED"}
    status, done = await call(stack, "GET", f"/api/v1/requests/{user}/http-1", keys["demo"])
    assert status == 200 and done["status"] == "COMPLETED"
    status, hidden = await call(stack, "GET", f"/api/v1/requests/{user}/http-1", keys["other"])
    assert (status, hidden["error"]["code"]) == (404, "NOT_FOUND")


async def test_list_with_a_cursor_and_cancel(stack: Stack, keys: dict[str, str]) -> None:
    user = stack.user("lister")
    long = {**REPORT, "duration_s": 120}
    ids = [f"list-{n}" for n in range(3)]
    for request_id in ids:
        body = {"user_id": user, "action": "generate_report", "payload": long, "id": request_id}
        assert (await call(stack, "POST", "/api/v1/requests", keys["demo"], body))[0] == 202
    seen, cursor = [], None
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        status, page = await call(stack, "GET", f"/api/v1/requests/{user}{query}", keys["demo"])
        assert status == 200, page
        seen += [r["request_id"] for r in page["requests"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    for request_id in ids:
        path = f"/api/v1/requests/{user}/{request_id}/cancel"
        status, other = await call(stack, "POST", path, keys["other"])
        assert status == 404, other
        status, cancelled = await call(stack, "POST", path, keys["demo"])
        assert status == 200 and cancelled["status"] == "CANCELLED", cancelled


@pytest.mark.parametrize(
    ("key", "raw", "status", "code"),
    [
        ("none", b"{}", 401, "UNAUTHORIZED"),
        ("wrong", b"{}", 401, "UNAUTHORIZED"),
        ("demo", b"{not json", 400, "VALIDATION_ERROR"),
        ("demo", b'{"action": "generate_report"}', 400, "VALIDATION_ERROR"),
        ("demo", b'{"user_id": "u", "action": "nope"}', 400, "INVALID_ACTION"),
    ],
)
async def test_refusals_over_http(
    stack: Stack, keys: dict[str, str], key: str, raw: bytes, status: int, code: str
) -> None:
    api_key = {"none": None, "wrong": "sk_" + "0" * 40}.get(key, keys.get(key))
    got, answer = await call(stack, "POST", "/api/v1/requests", api_key, raw=raw)
    assert (got, answer["error"]["code"], answer["error"]["retryable"]) == (status, code, False)


async def test_openapi_lists_every_v1_endpoint(stack: Stack) -> None:
    status, document = await call(stack, "GET", "/api/v1/openapi.json", None)
    assert status == 200
    assert sorted(document["paths"]) == [
        "/api/v1/publish",
        "/api/v1/requests",
        "/api/v1/requests/{user_id}",
        "/api/v1/requests/{user_id}/{request_id}",
        "/api/v1/requests/{user_id}/{request_id}/cancel",
    ]


ENQUEUE = """
from streaming.tasks_backend import for_user
from tests.e2e import jobs_tasks
with for_user("demo", {user!r}):
    result = jobs_tasks.{name}.enqueue(*{args!r})
print(result.id)
"""


def enqueue(stack: Stack, user: str, name: str, *args: Any) -> str:
    """Enqueue a @task through the Tasks API in a process of its own (as a view
    would); the TaskResult id."""
    code = ENQUEUE.format(user=user, name=name, args=args)
    return manage(stack, "shell", "-c", code).splitlines()[-1]


async def test_a_task_reports_progress_to_its_owners_socket(stack: Stack) -> None:
    user = stack.user("tasker")
    result_id = await asyncio.to_thread(enqueue, stack, user, "digest", "hello", 6, 0.5)
    tenant, owner, request_id = result_id.split("#")
    assert (tenant, owner) == ("demo", user)
    async with stack.client("tasker") as socket:
        answer = await socket.call("request.status", {"request_id": request_id})
        assert answer["type"] == "response", answer
        end = await socket.terminal(request_id, within=30)
        progress = [f for f in socket.about(request_id) if f["type"] == "progress"]
    assert end["type"] == "complete" and end["result"]["rounds"] == 6, end
    assert progress and progress[-1]["percentage"] == 100
    assert [p["percentage"] for p in progress] == sorted(p["percentage"] for p in progress)


@pytest.mark.parametrize(
    ("name", "args", "status", "field", "value"),
    [
        (
            "fail_loudly",
            ("boom",),
            "FAILED",
            "error",
            {"code": "INTERNAL_ERROR", "message": "Internal error"},
        ),
        ("report_without_context", (4,), "COMPLETED", "result", 4),
    ],
)
async def test_task_outcomes_land_in_the_request_record(
    stack: Stack, name: str, args: tuple, status: str, field: str, value: Any
) -> None:
    user = stack.user("outcomes")
    result_id = await asyncio.to_thread(enqueue, stack, user, name, *args)
    request_id = result_id.split("#")[2]
    for _ in range(200):  # a safety net, not a speed test
        record = await stack.read_record(request_id, "outcomes")
        if record.is_final:
            break
        await asyncio.sleep(0.1)
    assert record.status == status
    assert (record.result if field == "result" else record.error) == value
