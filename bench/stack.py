"""Start and stop the processes a benchmark run measures (all on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import websockets

from storage.localserver import free_port, start_dynalite, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-0123456789abcdef0123456789"
os.environ["STREAMER_JWT_SECRET"] = SECRET


def token(user: str, tenant: str = "bench") -> str:
    """A token the stacks accept (HS256 with the benchmark's secret)."""
    return jwt.encode(
        {"sub": user, "tenant_id": tenant, "exp": int(time.time()) + 3600},
        SECRET,
        algorithm="HS256",
    )


async def connect(url: str) -> Any:
    """A WebSocket client without compression or a size limit."""
    return await websockets.connect(url, compression=None, max_size=None, open_timeout=30)


@dataclass
class Stack:
    """Environment and processes of one local stack."""

    env: dict[str, str]
    port: int
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def manage(self, *args: str) -> str:
        """Run a management command to completion; its stdout."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return result.stdout.strip()

    def spawn(
        self, name: str, *args: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running management command (output to workdir/name.log)."""
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        return proc

    def wait_healthy(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{self.base}/healthz", timeout=2).status == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError("server did not become healthy")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def rss_kib(self, name: str) -> int:
        """Resident memory of a process, from /proc."""
        status = Path(f"/proc/{self.procs[name].pid}/status").read_text()
        return next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
        )

    def metric(self, name: str, labels: str = "") -> float:
        """One sample from /metrics (0 when absent)."""
        text = urllib.request.urlopen(f"{self.base}/metrics", timeout=5).read().decode()
        prefix = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(prefix + " "):
                return float(line.split()[-1])
        return 0.0


@contextlib.contextmanager
def local_stack(
    redis: bool = False,
    workers: int = 0,
    server: str = "daphne",
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """dynalite (on disk) + tables + tenants + ``serve --server`` (daphne by default)
    (+ Redis and worker processes); ``env`` overrides the stack's settings."""
    workdir = Path(tempfile.mkdtemp(prefix="streamer-bench-"))
    dyn_port, port = free_port(), free_port()
    dynalite = start_dynalite(dyn_port, workdir / "dynamodb")
    redis_proc = None
    env = {
        **os.environ,
        "DJANGO_DEBUG": "1",
        "DATA_DIR": str(workdir),
        "DYNAMODB_ENDPOINT_URL": f"http://127.0.0.1:{dyn_port}",
        "STREAMER_TABLE_PREFIX": "bench",
        "STREAMER_BENCH": "1",
        "STREAMER_RATE_LIMIT_FRAMES": "1000000",
        "STREAMER_POLL_INTERVAL_S": "30",  # wake-ups carry the load; no poll noise in the counts
        "LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    env.pop("REDIS_URL", None)
    if redis:
        redis_port = free_port()
        redis_proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    stack = Stack(env=env, port=port, workdir=workdir)
    try:
        wait_until_up(env["DYNAMODB_ENDPOINT_URL"])
        stack.manage("create_tables")
        stack.manage("migrate", "--noinput", "-v", "0")
        for tenant in ("bench", "fan"):
            stack.manage("create_tenant", tenant, "--max-connections", "0")
        stack.spawn(
            "server",
            "serve",
            *("--port", str(port), "--server", server),
            "--with-worker" if not redis else "--no-worker",
        )
        for i in range(workers):
            stack.spawn(f"worker{i}", "process_requests", "--concurrency", "16")
        stack.wait_healthy()
        yield stack
    finally:
        for name in list(stack.procs):
            stack.stop(name)
        for proc in (redis_proc, dynalite):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
