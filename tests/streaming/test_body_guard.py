"""The back-end HTTP APIs check the caller before reading a body, and refuse bodies over
STREAMER_MAX_HTTP_BODY_BYTES with 413 before reading them: through the ASGI application
daphne serves (streaming.asgi), and in the views themselves."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.test import AsyncClient

from connections.models import ApiKey
from streaming.asgi import application
from tests.connections.test_publishing import live_socket, received
from tests.streaming.test_apigw import connect_event
from tests.support.apigw import token

CAP = 1024


class Upload:
    """Plays a client sending a body in chunks; counts the chunks the server read."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.read = 0
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if not self.chunks:
            # All sent: a real client now waits for the answer (Django listens for a
            # disconnect meanwhile); this wait ends when the application returns.
            await asyncio.Event().wait()
        self.read += 1
        chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    async def post(self, path: str, headers: dict[str, str]) -> tuple[int, dict]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"localhost")]
            + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        await asyncio.wait_for(application(scope, self.receive, self.send), 10)
        start = next((m for m in self.sent if m["type"] == "http.response.start"), None)
        if start is None:
            return 0, {}  # no answer at all
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return start["status"], json.loads(body)


@pytest.fixture
def capped(settings):
    settings.STREAMER_MAX_HTTP_BODY_BYTES = CAP


def publish_body(size: int = 0) -> bytes:
    return json.dumps({"user_id": "u1", "frame": {"text": "x" * size}}).encode()


@pytest.mark.parametrize(
    ("auth", "chunks", "length", "status", "reads"),
    [
        # no or a wrong key: refused on the headers, not one body byte read
        (None, [b"x" * 4096] * 100, "409600", 401, 0),
        ("Bearer sk_wrongwrongwrongwrong", [b"x" * 4096] * 100, "409600", 401, 0),
        # a valid key, a declared length over the cap: 413 unread
        ("Bearer KEY", [b"x" * 4096] * 100, "409600", 413, 0),
        ("Bearer KEY", [b"x"], "12x", 400, 0),
        # a valid key, no declared length (chunked): reading stops once the cap is passed
        ("Bearer KEY", [b"x" * 300] * 100, None, 413, 4),
        # within the cap: delivered, in one or in several chunks
        ("Bearer KEY", [publish_body()], "LEN", 200, 1),
        ("Bearer KEY", [publish_body()[:10], publish_body()[10:]], None, 200, 2),
    ],
    ids=[
        "no-key",
        "wrong-key",
        "declared-too-large",
        "bad-length",
        "streamed-too-large",
        "ok",
        "ok-chunked",
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_publish_through_the_asgi_application(
    moto_dynamodb, apigw_tenant, capped, auth, chunks, length, status, reads
) -> None:
    channel = await live_socket("a1", user="u1")
    _, secret = await asyncio.to_thread(ApiKey.issue, apigw_tenant)
    headers = {"content-type": "application/json"}
    if auth is not None:
        headers["authorization"] = auth.replace("KEY", secret)
    if length is not None:
        headers["content-length"] = str(sum(map(len, chunks))) if length == "LEN" else length
    upload = Upload(chunks)
    got_status, body = await upload.post("/api/v1/publish", headers)
    assert (got_status, upload.read) == (status, reads)
    if status == 200:
        assert body["delivered"] == 1 and (await received(channel))["text"] == ""
    else:
        assert set(body["error"]) == {"code", "message"}
        assert await received(channel) is None


@pytest.mark.parametrize(
    ("secret", "chunks", "status", "reads"),
    [
        (None, [b"x" * 4096] * 10, 403, 0),
        ("wrong", [b"x" * 4096] * 10, 403, 0),
        ("shared-secret", [b"x" * 600] * 10, 413, 2),
        ("shared-secret", ["EVENT"], 200, 1),
    ],
    ids=["no-secret", "wrong-secret", "too-large", "ok"],
)
@pytest.mark.django_db(transaction=True)
async def test_apigw_events_through_the_asgi_application(
    moto_dynamodb, apigw_tenant, capped, secret, chunks, status, reads
) -> None:
    chunks = [json.dumps(connect_event(token())).encode() if c == "EVENT" else c for c in chunks]
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers["x-streamer-secret"] = secret
    upload = Upload(chunks)
    got_status, body = await upload.post("/apigw/events", headers)
    assert (got_status, upload.read) == (status, reads)
    if status == 200:
        assert body == {"statusCode": 200}


@pytest.mark.parametrize(
    ("path", "auth", "status"),
    [
        ("/api/v1/publish", "none", 401),
        ("/api/v1/publish", "key", 413),
        ("/apigw/events", "none", 403),
        ("/apigw/events", "key", 413),
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_views_check_the_caller_then_the_size(
    moto_dynamodb, apigw_tenant, capped, path, auth, status
) -> None:
    """Without the ASGI guard in front (another entry point), the views refuse too."""
    _, secret = await asyncio.to_thread(ApiKey.issue, apigw_tenant)
    headers = {}
    if auth == "key":
        headers = {"Authorization": f"Bearer {secret}", "X-Streamer-Secret": "shared-secret"}
    response = await AsyncClient().post(
        path, publish_body(CAP), content_type="application/json", headers=headers
    )
    assert response.status_code == status
    assert set(response.json()["error"]) == {"code", "message"}


class Vanishing(Upload):
    """A client that disconnects after its first chunk."""

    async def receive(self) -> dict:
        self.read += 1
        if self.read == 1:
            return {"type": "http.request", "body": b'{"user_id":', "more_body": True}
        return {"type": "http.disconnect"}


@pytest.mark.django_db(transaction=True)
async def test_a_client_gone_mid_body_gets_nothing_and_nothing_is_published(
    moto_dynamodb, apigw_tenant, capped
) -> None:
    channel = await live_socket("a1", user="u1")
    _, secret = await asyncio.to_thread(ApiKey.issue, apigw_tenant)
    upload = Vanishing([])
    scope_headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    assert await upload.post("/api/v1/publish", scope_headers) == (0, {})
    assert upload.sent == [] and upload.read == 2
    assert await received(channel) is None
