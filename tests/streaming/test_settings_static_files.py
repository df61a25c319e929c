"""The JS client lives in its npm package (clients/js/) and is still served at
/static/streaming/streamer-client.js, next to the demo page's own files, through the
static files handler that `manage.py serve` uses with DEBUG on (streaming/asgi.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asgiref.testing import ApplicationCommunicator
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

from tests.support.packages import ROOT

CLIENT_SOURCE = ROOT / "clients" / "js" / "src"


async def get(path: str) -> tuple[int, bytes]:
    """Status and body of a GET through the static files handler (a file response's last
    message may leave out ``body``, which channels' HttpCommunicator does not accept)."""
    app = ASGIStaticFilesHandler(get_asgi_application())
    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=10)
    body = b""
    while True:
        message = await communicator.receive_output(timeout=10)
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return start["status"], body


@pytest.mark.parametrize(
    "path, source",
    [
        ("/static/streaming/streamer-client.js", CLIENT_SOURCE / "streamer-client.js"),
        ("/static/streaming/streamer-client.d.ts", CLIENT_SOURCE / "streamer-client.d.ts"),
        ("/static/streaming/demo.js", ROOT / "streaming" / "static" / "streaming" / "demo.js"),
    ],
    ids=["client", "client-types", "demo-page-script"],
)
async def test_the_client_and_the_demo_page_are_served_at_their_urls(
    path: str, source: Path
) -> None:
    expected = await asyncio.to_thread(source.read_bytes)
    assert await get(path) == (200, expected)


@pytest.mark.parametrize(
    "path",
    [
        "/static/streaming/package.json",
        "/static/streaming/README.md",
        "/static/streaming/examples/report.ts",
        "/static/streaming/node_modules/typescript/package.json",
        "/static/package.json",
    ],
)
async def test_the_rest_of_the_npm_package_is_not_served(path: str) -> None:
    status, _ = await get(path)
    assert status == 404
