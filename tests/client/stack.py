"""A live local stack for end-to-end tests: dynalite, tables, migrations, the ``demo``
tenant and ``manage.py serve`` (daphne with its in-process worker) on a free port.

Shared by ``tests/client`` and ``tests/browser``; every process it starts is stopped in
``stop()`` (and by the fixtures' ``finally``), whatever happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from storage import localserver

REPO_ROOT = Path(__file__).resolve().parents[2]
MANAGE = REPO_ROOT / "manage.py"
TENANT = "demo"


@dataclass
class LiveStack:
    """Handles on the processes of one live stack."""

    base_url: str = ""
    ws_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    data_dir: Path | None = None
    log_path: Path | None = None
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def manage(self, *args: str, timeout: float = 60) -> str:
        """Run ``manage.py ARGS`` with the stack's environment; its stdout."""
        done = subprocess.run(
            [sys.executable, str(MANAGE), *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout.strip()

    def token(self, user: str, ttl: int = 3600) -> str:
        """A development token for ``user`` of the demo tenant."""
        return self.manage("issue_token", "--tenant", TENANT, "--user", user, "--ttl", str(ttl))

    def server_log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-20000:]

    def stop(self) -> None:
        for proc in reversed(self._procs):
            _stop(proc)
        self._procs.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s")


def start_stack(**extra_env: str) -> LiveStack:
    """Start everything; the caller must call ``stop()`` (in a ``finally``)."""
    stack = LiveStack()
    try:
        stack._tmp = tempfile.TemporaryDirectory(prefix="streamer-live-")
        stack.data_dir = Path(stack._tmp.name)
        db_port = localserver.free_port()
        dynalite = localserver.start_dynalite(db_port)
        stack._procs.append(dynalite)
        endpoint = f"http://127.0.0.1:{db_port}"
        localserver.wait_until_up(endpoint)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
        env.pop("REDIS_URL", None)
        env.update(
            DYNAMODB_ENDPOINT_URL=endpoint,
            STREAMER_TABLE_PREFIX=f"live{uuid.uuid4().hex[:10]}",
            DATA_DIR=str(stack.data_dir),
            DJANGO_DEBUG="1",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ACCESS_KEY_ID=env.get("AWS_ACCESS_KEY_ID", "local"),
            AWS_SECRET_ACCESS_KEY=env.get("AWS_SECRET_ACCESS_KEY", "local"),
            STREAMER_POLL_INTERVAL_S="0.2",
            PYTHONUNBUFFERED="1",
            LOG_LEVEL="WARNING",
        )
        env.pop("DATABASE_URL", None)
        env.update(extra_env)
        stack.env = env
        stack.manage("create_tables")
        stack.manage("migrate", "--noinput")
        stack.manage("create_tenant", TENANT)
        port = localserver.free_port()
        stack.log_path = stack.data_dir / "serve.log"
        with stack.log_path.open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, str(MANAGE), "serve", "--port", str(port)],
                env=env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        stack._procs.append(server)
        stack.base_url = f"http://127.0.0.1:{port}"
        stack.ws_url = f"ws://127.0.0.1:{port}/ws"
        try:
            _wait_http(stack.base_url + "/healthz", server)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n--- server log ---\n{stack.server_log()}") from None
    except BaseException:
        stack.stop()
        raise
    return stack
