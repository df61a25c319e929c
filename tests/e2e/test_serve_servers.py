"""``manage.py serve --server``: every supported ASGI server serves the full stack (a
token-authenticated echo, an async request to its terminal frame, a clean SIGTERM), the
default is the one docs/performance.md chose, and a server name it does not know is a
clear error that starts nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.stack import MANAGE, Environment, running_stack
from streaming.management.commands.serve import DEFAULT_SERVER, SERVERS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

QUICK_REPORT = {"duration_s": 0, "steps": 1, "max_requests": 0, "include_connections": False}


@pytest.mark.parametrize("server", ["daphne", "uvicorn", "granian", None])
async def test_each_server_serves_the_full_stack(e2e: Environment, server: str | None) -> None:
    with running_stack(e2e, f"serve-{server or 'default'}", server=server) as stack:
        proc = stack.servers[0].proc
        proc.wait_for_output("serving on")
        assert f"in-process worker, {server or DEFAULT_SERVER})" in proc.output()
        async with stack.client("alice") as client:
            answer = await client.call("echo", {"n": 1})
            assert answer["type"] == "response", answer
            assert answer["data"] == {"echo": {"n": 1}}, answer
            ack = await client.submit("report-1", QUICK_REPORT)
            assert ack["type"] == "acknowledgment", ack
            done = await client.terminal("report-1", within=30)
            assert done["type"] == "complete", client.brief()
            assert [f["type"] for f in client.about("report-1")].count("complete") == 1
    assert proc.popen.returncode is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "tornado"], "invalid choice: 'tornado'"),
        (["--server", ""], "invalid choice: ''"),
        (["--server", "DAPHNE"], "invalid choice: 'DAPHNE'"),
        (["--server"], "expected one argument"),
    ],
)
def test_an_unknown_server_is_refused_with_the_choices(
    e2e: Environment, args: list[str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, str(MANAGE), "serve", "--port", "1", *args],
        env=e2e.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    if "invalid choice" in message:
        assert "(choose from " + ", ".join(f"'{s}'" for s in sorted(SERVERS)) in done.stderr
    assert "serving on" not in done.stdout
