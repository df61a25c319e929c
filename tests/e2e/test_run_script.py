"""``./scripts/run`` killed with ``kill -9``: its children (embedded DynamoDB, the web
server) live in their own sessions and survive it. The next run of the same ``DATA_DIR``
finds them in ``$DATA_DIR/run.pids``, says so, stops them and comes up on the same
ports; a run started while another one of that ``DATA_DIR`` is alive refuses.

Real processes throughout: the script, dynalite, daphne. Everything is stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stack import LIVE, REPO_ROOT, START_TIMEOUT_S, Proc, http_get
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
    assert len(orphans) == 2  # embedded DynamoDB and the web server

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
    assert len(replacement) == 2 and not set(replacement) & set(orphans)

    # A clean stop (SIGTERM, like Ctrl-C) stops its children and removes the pid file.
    assert second.stop(timeout=30) == 143
    assert not any(running(pid) for pid in replacement)
    assert not (data_dir / "run.pids").exists()
