"""The stack ``./scripts/run`` starts.

* Killed with ``kill -9``: its children (embedded DynamoDB, redis-server, the worker,
  the web server) live in their own sessions and survive it. The next run of the same
  ``DATA_DIR`` finds them in ``$DATA_DIR/run.pids``, says so, stops them and comes up on
  the same ports; a run started while another one of that ``DATA_DIR`` is alive refuses.
* Ops commands run as separate processes, as an operator would in another shell: with
  the default Redis layer ``send_message`` reaches a socket of the server and
  ``create_tenant --disable`` closes the tenant's sockets with 4403; without Redis
  (``REDIS_URL=``) both refuse, change nothing and say why.

Real processes throughout: the script, dynalite, redis-server, the worker, daphne, the
commands. Everything is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.stack import LIVE, MANAGE, REPO_ROOT, START_TIMEOUT_S, Proc, http_get
from bench.wsclient import WSClient, open_client
from storage.localserver import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RUN = str(REPO_ROOT / "scripts" / "run")
STALE = "stopping a stale stack left by a killed ./scripts/run"


def run_env(data_dir: Path, port: int, db_port: int) -> dict[str, str]:
    drop = ("STREAMER_", "DYNAMODB_", "DJANGO_", "REDIS_", "DATABASE_URL", "PYTEST_", "COV_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        PORT=str(port),
        DYNAMODB_PORT=str(db_port),
        DATA_DIR=str(data_dir),
        ADMIN_PASSWORD="e2e-admin-password",
        BOOTSTRAP_SKIP_APT="1",  # scripts/test bootstrapped already; never call apt here
        AWS_DEFAULT_REGION="us-east-1",
        REDIS_PORT=str(free_port()),  # the run's own redis-server (REDIS_URL is unset)
    )
    return env


def wait_serving(proc: Proc, port: int) -> None:
    """Until this run printed its banner and /healthz answers 200."""
    proc.wait_for_output("Streamer is starting", timeout=START_TIMEOUT_S * 2)
    deadline = time.monotonic() + START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive:
            raise proc.failure("exited while starting")
        with contextlib.suppress(OSError):
            status, _, last = http_get(f"http://127.0.0.1:{port}/healthz", timeout=3)
            if status == 200:
                return
        time.sleep(0.2)
    raise proc.failure(f"/healthz not 200 (last: {last[:200]})")


def stack_pids(data_dir: Path) -> list[int]:
    """The children a run recorded in its pid file."""
    lines = (data_dir / "run.pids").read_text().splitlines()
    return [int(line.split()[1]) for line in lines if line.startswith("child ")]


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    state = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout.strip()
    return bool(state) and not state.startswith("Z")


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Proc]]:
    """Launched runs; at the end each is stopped, then every child any run recorded is
    killed (also when the test failed half-way)."""
    started: list[Proc] = []
    recorded: set[int] = set()

    def remember() -> None:
        with contextlib.suppress(FileNotFoundError):
            recorded.update(stack_pids(tmp_path / "data"))

    yield started
    remember()
    stop_runs(started, recorded)


def stop_runs(started: list[Proc], recorded: Iterable[int]) -> None:
    """Stop each run (last first), then kill every child any of them recorded."""
    for proc in reversed(started):
        proc.stop(timeout=20)
        with contextlib.suppress(ValueError):
            LIVE.remove(proc)
    for pid in recorded:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def test_next_run_stops_the_stack_a_killed_run_left(tmp_path: Path, runs: list[Proc]) -> None:
    data_dir = tmp_path / "data"
    port, db_port = free_port(), free_port()
    env = run_env(data_dir, port, db_port)

    first = Proc("run-1", ["bash", RUN], env=env, log_dir=tmp_path)
    runs.append(first)
    wait_serving(first, port)
    orphans = stack_pids(data_dir)
    assert len(orphans) == 4  # embedded DynamoDB, redis-server, the worker, the web server

    # While it runs, another run of the same DATA_DIR refuses (other ports, so only the
    # pid file can tell).
    other = Proc(
        "run-busy", ["bash", RUN], env=run_env(data_dir, free_port(), free_port()), log_dir=tmp_path
    )
    runs.append(other)
    assert other.popen.wait(timeout=120) == 1
    assert "another ./scripts/run" in other.errors()
    assert stack_pids(data_dir) == orphans  # the live run's file is untouched

    first.kill9()
    # The bug this guards against: the children outlive the script and hold the ports.
    assert all(running(pid) for pid in orphans)
    status, _, _ = http_get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert status == 200

    second = Proc("run-2", ["bash", RUN], env=env, log_dir=tmp_path)
    runs.append(second)
    wait_serving(second, port)
    assert STALE in second.errors()
    assert not any(running(pid) for pid in orphans)
    replacement = stack_pids(data_dir)
    assert len(replacement) == 4 and not set(replacement) & set(orphans)

    # A clean stop (SIGTERM, like Ctrl-C) stops its children and removes the pid file.
    assert second.stop(timeout=30) == 143
    assert not any(running(pid) for pid in replacement)
    assert not (data_dir / "run.pids").exists()


# --- ops commands from another process ---------------------------------------------------


@dataclass
class RunStack:
    """A running ``./scripts/run`` and the environment an operator's shell would have."""

    mode: str  # "redis" (the default) or "memory" (REDIS_URL=)
    port: int
    command_env: dict[str, str]

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python manage.py ARGS`` as a separate process: its exit code and output."""
        return subprocess.run(
            [sys.executable, MANAGE, *args],
            cwd=REPO_ROOT,
            env=self.command_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    async def amanage(self, *args: str) -> subprocess.CompletedProcess[str]:
        """:meth:`manage` off the event loop, so open sockets keep reading meanwhile."""
        return await asyncio.to_thread(self.manage, *args)

    async def connect(self, tenant: str, user: str) -> contextlib.AbstractAsyncContextManager:
        """A socket of ``tenant:user`` with a token from ``manage.py issue_token``."""
        issued = await self.amanage("issue_token", "--tenant", tenant, "--user", user)
        assert issued.returncode == 0, issued.stderr
        token = issued.stdout.strip().splitlines()[-1]
        return open_client(f"ws://127.0.0.1:{self.port}/ws?token={token}")


@pytest.fixture(scope="module", params=["redis", "memory"])
def run_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """``./scripts/run`` with its default Redis layer, or with ``REDIS_URL=`` (one process)."""
    mode = request.param
    root = tmp_path_factory.mktemp(f"run-{mode}")
    data_dir = root / "data"
    port, db_port = free_port(), free_port()
    env = run_env(data_dir, port, db_port)
    redis_url = f"redis://127.0.0.1:{env['REDIS_PORT']}/0" if mode == "redis" else ""
    if mode == "memory":
        env["REDIS_URL"] = ""
    command_env = {
        **env,
        "DJANGO_DEBUG": "1",  # as scripts/run sets it
        "DYNAMODB_ENDPOINT_URL": f"http://127.0.0.1:{db_port}",
        "REDIS_URL": redis_url,
    }
    proc = Proc(f"run-{mode}", ["bash", RUN], env=env, log_dir=root)
    recorded: list[int] = []
    try:
        wait_serving(proc, port)
        recorded = stack_pids(data_dir)
        yield RunStack(mode, port, command_env)
    finally:
        stop_runs([proc], recorded)


async def still_answers(client: WSClient) -> None:
    """The socket is open and served: a synchronous action gets its response."""
    assert (await client.call("echo", {"alive": True}))["type"] == "response"


async def test_send_message_from_another_process(run_stack: RunStack) -> None:
    user = f"someone-{run_stack.mode}"
    async with await run_stack.connect("demo", user) as client:
        await still_answers(client)  # registered and served before the command runs
        result = await run_stack.amanage(
            "send_message", "--user", f"demo:{user}", "--json", '{"text": "hello from ops"}'
        )
        if run_stack.mode == "redis":
            assert result.returncode == 0, result.stderr
            # the frame crosses Redis to the servers' hubs (docs/hub.md): this process
            # holds no socket, so it reports the relay, not a per-socket count
            assert result.stdout.strip() == "delivered=0 gone=0 failed=0 relayed to the servers"
            frame = await client.wait_for(lambda f: f["type"] == "message", what="the frame")
            assert frame["text"] == "hello from ops"
        else:
            assert result.returncode == 1
            assert "delivered=" not in result.stdout
            assert "nothing was sent: 1 connection(s) are held by a server process" in (
                result.stderr
            )
            assert "REDIS_URL" in result.stderr
            await still_answers(client)  # after the command: nothing arrived before this
            assert not [f for f in client.frames if f["type"] == "message"]


async def test_create_tenant_disable_from_another_process(run_stack: RunStack) -> None:
    tenant = f"ops-{run_stack.mode}"
    created = await run_stack.amanage("create_tenant", tenant)
    assert created.returncode == 0, created.stderr
    async with (
        await run_stack.connect(tenant, "u1") as doomed,
        await run_stack.connect("demo", f"bystander-{run_stack.mode}") as bystander,
    ):
        await still_answers(doomed)
        result = await run_stack.amanage("create_tenant", tenant, "--disable")
        if run_stack.mode == "redis":
            assert result.returncode == 0, result.stderr
            assert f"tenant {tenant} updated" in result.stdout and "disabled" in result.stdout
            assert "closed 1 live connection(s) with 4403" in result.stdout
            assert await doomed.wait_closed() == 4403
        else:
            assert result.returncode == 1
            assert f"tenant {tenant} not changed: 1 connection(s)" in result.stderr
            assert "REDIS_URL" in result.stderr
            await still_answers(doomed)
            unchanged = await run_stack.amanage("create_tenant", tenant)
            assert " active " in unchanged.stdout, unchanged.stdout
        await still_answers(bystander)  # another tenant's socket is left alone
