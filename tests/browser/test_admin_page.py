"""The admin in a real browser: log in, see a live WebSocket client in the connections
list, disconnect it with the action, and the client observes the close."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import websockets

from bench.stack import REPO_ROOT, Stack
from tests.browser.test_demo_page import ARTIFACTS, run_scenario

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(180)]


def make_superuser(stack: Stack) -> tuple[str, str]:
    username, password = f"ops-{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    stack.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_superuser({username!r}, 'ops@example.com', {password!r})",
    )
    return username, password


async def test_admin_disconnects_a_live_client(
    browser_stack: Stack, browser_driver: Path, chromium: str
) -> None:
    username, password = make_superuser(browser_stack)
    target = f"admin-target-{secrets.token_hex(3)}"
    token = browser_stack.issue_token(target)
    async with websockets.connect(f"{browser_stack.ws_url}?token={token}") as client:
        await client.send(json.dumps({"type": "ping"}))
        assert json.loads(await client.recv())["type"] == "pong"  # registered and live

        env = {
            **os.environ,
            "ADMIN_USER": username,
            "ADMIN_PASSWORD": password,
            "TARGET_USER": target,
        }
        args = [
            shutil.which("node") or "node",
            str(browser_driver),
            "--scenario",
            "admin",
            "--base-url",
            browser_stack.base,
            "--artifacts",
            str(ARTIFACTS),
            "--chromium",
            chromium,
            "--timeout",
            "90000",
        ]
        if os.environ.get("STREAMER_BROWSER_STATES") == "1":
            args.append("--states")
        done = await asyncio.to_thread(
            subprocess.run,
            args,
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        outcome = json.loads(lines[-1]) if lines else {"ok": False, "error": done.stderr[-2000:]}
        assert outcome.get("ok"), f"{outcome}\nserver log:\n{browser_stack.server_log()[-3000:]}"

        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), 10)
        assert closed.value.rcvd is not None
        assert outcome["message"].startswith(f"Connection {outcome['connectionId']}")


async def _until_frame(client: websockets.ClientConnection, request_id: str, kind: str) -> dict:
    """Frames of the socket until ``kind`` about ``request_id`` arrives."""
    while True:
        frame = json.loads(await asyncio.wait_for(client.recv(), 30))
        if frame.get("request_id") == request_id and frame["type"] == kind:
            return frame


async def test_live_lists_are_readable_at_1280_px(
    browser_stack: Stack, browser_driver: Path, chromium: str
) -> None:
    """Both live lists at 1280 px (screenshots in test-artifacts/): the table is wholly
    visible beside the filter column, request ids stay on one line, every status is
    readable (WCAG AA contrast), and before a tenant is chosen the connections page
    lists the tenants with their live counts."""
    username, password = make_superuser(browser_stack)
    target = f"lists-{secrets.token_hex(3)}"
    completed, cancelled = str(uuid.uuid4()), str(uuid.uuid4())
    token = browser_stack.issue_token(target)
    async with websockets.connect(f"{browser_stack.ws_url}?token={token}") as client:
        report = {"action": "generate_report", "payload": {"duration_s": 0, "steps": 1}}
        await client.send(json.dumps({**report, "id": completed}))
        await _until_frame(client, completed, "complete")
        slow = {"action": "generate_report", "payload": {"duration_s": 60, "steps": 2}}
        await client.send(json.dumps({**slow, "id": cancelled}))
        await _until_frame(client, cancelled, "acknowledgment")
        cancel = {"action": "request.cancel", "payload": {"request_id": cancelled}}
        await client.send(json.dumps(cancel))
        assert (await _until_frame(client, cancelled, "error"))["error"]["code"] == "CANCELLED"

        outcome = await asyncio.to_thread(
            run_scenario,
            "admin-lists",
            browser_stack,
            browser_driver,
            chromium,
            150,
            {"ADMIN_USER": username, "ADMIN_PASSWORD": password, "TARGET_USER": target},
        )

    demo = next(row for row in outcome["overview"] if row["tenant"] == "demo")
    assert demo["href"] == "?tenant=demo" and int(demo["live"]) >= 1
    assert len(outcome["connections"]["ids"]) >= 1
    assert outcome["connections"]["table"]["right"] <= 1280
    requests = outcome["requests"]
    assert {i["text"] for i in requests["ids"]} == {completed, cancelled}
    assert all(i["lines"] == 1 for i in requests["ids"])
    assert {s["text"] for s in requests["statuses"]} == {"COMPLETED", "CANCELLED"}
    assert all(s["contrast"] >= 4.5 for s in requests["statuses"])
    assert requests["table"]["right"] <= 1280
    assert all(await asyncio.to_thread(lambda: [Path(f).is_file() for f in outcome["screenshots"]]))
