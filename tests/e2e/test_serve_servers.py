"""``manage.py serve --server``: every supported ASGI server serves the full stack (a
token-authenticated echo, an async request to its terminal frame, a clean SIGTERM); the
choices themselves: tests/streaming/test_serve_command.py."""

from __future__ import annotations

import pytest

from bench.stack import Environment, running_stack
from streaming.management.commands.serve import DEFAULT_SERVER

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
