"""No token, API key, password or signing secret is ever written to a log.

Order does not matter: the process test starts a server and a worker of its own at
DEBUG, hands them good and bad tokens (query string, ``auth.refresh``) and API keys,
then reads the log of every process this session has started so far (its own, and
those of any reliability or e2e module that ran before: servers at DEBUG in
test_hostile_sockets.py, crashed and restarted servers of the fault tests) and looks for
every credential handed out (``conftest.SECRETS``: the JWT secret, every minted token
and its signature alone, API keys, passwords). In-process, the auth and publish paths
are run with good and bad credentials with logging at DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from django.test import AsyncClient

from bench.stack import JWT_SECRET, Environment, Stack, running_stack
from bench.wsclient import open_client
from tests.reliability.conftest import LOG_DIRS, SECRETS, remember
from tests.reliability.test_hostile_sockets import issue_api_key, post_json


def b64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_auth_never_logs_tokens_even_at_debug(
    caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    from streaming.auth import AuthFailure, verify_token

    settings.STREAMER_JWT_SECRET = JWT_SECRET
    settings.STREAMER_JWT_ALGORITHMS = ["HS256"]
    settings.STREAMER_JWT_PUBLIC_KEY = ""
    now = int(time.time())
    body = {"sub": "a", "tenant_id": "t", "exp": now + 60}
    tokens = [
        jwt.encode(body, JWT_SECRET, algorithm="HS256"),
        jwt.encode({**body, "exp": now - 600}, JWT_SECRET, algorithm="HS256"),
        jwt.encode(body, "not-the-secret-but-long-enough!!", algorithm="HS256"),
        b64(b'{"alg":"none"}') + "." + b64(json.dumps(body).encode()) + ".",
        "garbage." + "A" * 40 + ".B",
    ]
    with caplog.at_level(logging.DEBUG):
        for token in tokens:
            with contextlib.suppress(AuthFailure):
                verify_token(remember(token))
    text = caplog.text
    assert "token rejected" in text  # the failures were logged, without the tokens
    assert [s for s in SECRETS if s in text] == []


@pytest.mark.django_db(transaction=True)
async def test_publish_never_logs_api_keys_even_at_debug(
    caplog: pytest.LogCaptureFixture, moto_dynamodb: Any
) -> None:
    from connections.models import ApiKey, Tenant

    tenant = await Tenant.objects.acreate(id="logs", name="Logs")
    _, key = await asyncio.to_thread(ApiKey.issue, tenant, "logs")
    remember(key)
    client = AsyncClient()
    with caplog.at_level(logging.DEBUG):
        for secret in (key, key[:-3] + "abc", "sk_" + "9" * 40, key + "x"):
            await client.post(
                "/api/v1/publish",
                {"frame": {"type": "notice"}},
                content_type="application/json",
                headers={"Authorization": f"Bearer {remember(secret)}"},
            )
    assert "Unauthorized" in caplog.text  # refusals were logged, without the keys
    assert [s for s in SECRETS if s in caplog.text] == []


async def use_credentials(stack: Stack) -> None:
    """Good and bad tokens and API keys, through a server and its worker at DEBUG."""
    now = int(time.time())
    refused = [
        stack.e2e.mint(stack.user("late"), exp=now - 600),
        stack.e2e.mint(stack.user("forger"), secret="not-the-secret-but-long-enough!!"),
    ]
    for token in refused:
        async with open_client(stack.servers[0].ws_url(token)) as client:
            assert await client.wait_closed() == 4401
    async with stack.client("holder") as client:
        fresh = stack.token("holder")
        answer = await client.call("auth.refresh", {"token": fresh})
        assert answer["type"] == "response", answer
        ack = await client.submit("secret-job", {"duration_s": 0, "steps": 1})
        assert ack["type"] == "acknowledgment", ack
        await client.terminal("secret-job")
    key = remember(await asyncio.to_thread(issue_api_key, stack, "demo"))
    url = f"{stack.servers[0].url}/api/v1/publish"
    body = {"user_id": stack.user("holder"), "frame": {"type": "notice"}}
    for secret, expected in ((key, 200), (remember(key[:-3] + "abc"), 401)):
        status, answer = await asyncio.to_thread(post_json, url, body, secret)
        assert status == expected, answer


@pytest.mark.e2e
async def test_no_secret_in_any_process_log(e2e: Environment, figures: dict[str, str]) -> None:
    """Every log file of this session's processes, its own DEBUG stack's included."""
    with running_stack(e2e, "secrets", workers=1, env={"LOG_LEVEL": "DEBUG"}) as stack:
        await use_credentials(stack)
        own_server_log = stack.server_log()
    assert "token rejected" in own_server_log  # the refusals were logged, at DEBUG
    roots = {e2e.log_dir, *(Path(p) for p in LOG_DIRS)}
    files = [
        f
        for root in roots
        if root.exists()
        for f in root.iterdir()
        # Tools whose job is to print a credential: issue_token (the e2e session's
        # token, not in SECRETS anyway) and the apikey-* helpers that create a key.
        if f.is_file() and "apikey" not in f.name and "issue_token" not in f.name
    ]
    assert files
    leaks = []
    size = 0
    for path in files:
        text = path.read_text(errors="replace")
        size += len(text)
        leaks += [(path.name, s[:12] + "…") for s in SECRETS if len(s) >= 12 and s in text]
    assert leaks == [], leaks
    figures["secrets in logs"] = (
        f"{len(SECRETS)} distinct tokens, token signatures, API keys and passwords used; "
        f"{len(files)} process log files ({size / 1e3:.0f} kB, this test's own server and "
        "worker at DEBUG and those of every module that ran before it, e.g. the "
        "hostile-input servers at DEBUG) and the in-process auth and publish logs at DEBUG "
        "searched: 0 found"
    )
