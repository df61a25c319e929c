"""The one launcher of a live local stack, for end-to-end, client, browser and
reliability tests and for the benchmark: every process on 127.0.0.1 on free ports.

* :func:`environment`: dynalite (in memory, or on disk so that it can be killed and
  restarted with its data) with every table under a fresh ``STREAMER_TABLE_PREFIX``, a
  data dir with the Django migrations applied and the tenants, the secrets, and the
  settings every child process gets (:class:`Environment`).
* :func:`running_stack`: on an environment, optionally ``redis-server``, N ``manage.py
  serve`` processes (each waited for until ``GET /healthz`` is 200) and N ``manage.py
  process_requests`` workers (:class:`Stack`). Stacks may share an environment; each
  namespaces the user ids of its minted tokens (``local-alice``).
* :func:`local_stack`: the benchmark's stack (both of the above in one block).

Every process writes its stdout/stderr to files under the environment's ``logs/``
directory and is registered in :data:`LIVE` while it runs (the test suites append the
tails of the live ones to a failure report). Every process is stopped (SIGTERM, then
SIGKILL after a bound) when its block ends, also on failure.

It lives in ``bench/`` (importable by ``python -m bench`` and by the tests, which import
``bench`` but are not imported by it) rather than in ``tests/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import websockets

from bench.wsclient import WSClientContext, open_client
from storage import base, localserver

REPO_ROOT = Path(__file__).resolve().parents[1]
ROOT = REPO_ROOT  # the benchmark's name for it
MANAGE = str(REPO_ROOT / "manage.py")
PYTHON = sys.executable
JWT_SECRET = "stack-" + secrets.token_hex(24)
SECRET_KEY = "stack-django-" + secrets.token_hex(24)
START_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 10.0
DEFAULT_TENANTS: dict[str, tuple[str, ...]] = {"demo": (), "other": ()}

# Processes still running (their log tails go into the report of a failing test).
LIVE: list[Proc] = []
_names = itertools.count()


# --- processes ------------------------------------------------------------------------


class Proc:
    """One child process with its output captured to files."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        stem = f"{next(_names):02d}-{name}"
        self.stdout_path = log_dir / f"{stem}.out"
        self.stderr_path = log_dir / f"{stem}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                args,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        LIVE.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self.stdout_path.read_text(errors="replace")

    def errors(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        """The last lines of stdout and stderr, for failure reports."""
        state = "running" if self.alive else f"exited {self.popen.returncode}"
        parts = [f"$ {' '.join(self.args)}  [pid {self.pid}, {state}]"]
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {label} ({path}) ---")
            parts.extend(text or ["(empty)"])
        return "\n".join(parts)

    def failure(self, message: str) -> RuntimeError:
        return RuntimeError(f"{self.name}: {message}\n{self.tail()}")

    def wait_for_output(self, text: str, timeout: float = START_TIMEOUT_S) -> None:
        """Block until ``text`` appears in the output (stdout or stderr)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output() or text in self.errors():
                return
            if not self.alive:
                raise self.failure(f"exited before printing {text!r}")
            time.sleep(0.05)
        raise self.failure(f"did not print {text!r} within {timeout}s")

    def wait_ok(self, timeout: float = 90.0) -> str:
        """Wait for a one-shot command; its stdout, or RuntimeError when it failed."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise self.failure(f"did not finish within {timeout}s") from None
        if code != 0:
            raise self.failure(f"exited with {code}")
        with contextlib.suppress(ValueError):
            LIVE.remove(self)
        return self.output()

    def kill9(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        return self.popen.returncode


def _port_answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """GET ``url``: (status, content type, body); HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode(errors="replace")


# --- storage, tenants, settings -------------------------------------------------------------


class Environment:
    """What every stack started on it shares: storage (dynalite and a table prefix), the
    data dir (Django database), the secrets, the settings of every child process, and
    the log directory of every process started for it."""

    def __init__(
        self, root: Path, *, prefix: str | None = None, settings: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.log_dir = root / "logs"
        self.data_dir = root / "data"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.endpoint = ""
        self.prefix = prefix or f"e2e-{secrets.token_hex(4)}"
        self.settings = dict(settings or {})
        self.procs: list[Proc] = []
        self.issued_token = ""
        self.dynalite: Dynalite | None = None  # set by environment()

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a child process: ours minus anything that configures
        Streamer, plus the stack's settings (``settings`` of the constructor last but
        one, ``extra`` last)."""
        drop = ("STREAMER_", "DYNAMODB_", "DJANGO_", "REDIS_", "DATABASE_URL", "PYTEST_", "COV_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update(
            DJANGO_SETTINGS_MODULE="streaming.settings",
            PYTHONUNBUFFERED="1",
            DATA_DIR=str(self.data_dir),
            DYNAMODB_ENDPOINT_URL=self.endpoint,
            STREAMER_TABLE_PREFIX=self.prefix,
            STREAMER_JWT_SECRET=JWT_SECRET,
            DJANGO_DEBUG="0",
            DJANGO_SECRET_KEY=SECRET_KEY,
            # The servers listen on plain HTTP on loopback.
            DJANGO_SECURE_SSL_REDIRECT="0",
            DJANGO_SESSION_COOKIE_SECURE="0",
            DJANGO_CSRF_COOKIE_SECURE="0",
            AWS_DEFAULT_REGION="us-east-1",
            LOG_LEVEL="INFO",
            STREAMER_POLL_INTERVAL_S="0.2",
        )
        env.update(self.settings)
        env.update(extra)
        return env

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, args, env=env, log_dir=self.log_dir)
        self.procs.append(proc)
        return proc

    def manage(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        return self.start(name, [PYTHON, MANAGE, *args], env or self.env())

    def mint(
        self, user: str, tenant: str = "demo", *, secret: str = JWT_SECRET, **claims: Any
    ) -> str:
        """A token signed like ``issue_token`` does (HS256, the same secret); a claim
        given as None is left out."""
        now = int(time.time())
        body: dict[str, Any] = {
            "sub": user,
            "tenant_id": tenant,
            "permissions": [],
            "iat": now,
            "exp": now + 3600,
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, secret, algorithm="HS256")

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
            with contextlib.suppress(ValueError):
                LIVE.remove(proc)


class Dynalite:
    """dynalite on a fixed port; on disk under ``path`` when given, so that
    :meth:`kill9` then :meth:`start` are a crash and a restart with the same data."""

    def __init__(
        self, e2e: Environment, *, path: Path | None = None, port: int | None = None
    ) -> None:
        self.e2e = e2e
        self.path = path
        self.port = port or localserver.free_port()
        self.proc: Proc | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        """Start it (again) on the same port and data; returns once it answers."""
        args = localserver.dynalite_command(self.port, self.path)
        self.proc = self.e2e.start("dynalite", args, os.environ.copy())
        try:
            localserver.wait_until_up(self.endpoint, timeout_s=START_TIMEOUT_S)
        except TimeoutError:
            raise self.proc.failure("did not answer") from None
        return self.proc

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill9()


@contextlib.contextmanager
def environment(
    root: Path,
    *,
    on_disk: bool = False,
    tenants: dict[str, tuple[str, ...]] | Sequence[str] = DEFAULT_TENANTS,
    prefix: str | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Environment]:
    """Storage, data dir and tenants for stacks to run on. With ``on_disk`` dynalite
    keeps its data under ``root/dynalite`` on a fixed port, and ``env.dynalite`` can be
    killed and started again with the same data. ``tenants`` maps a tenant to extra
    ``create_tenant`` arguments (or is a list of tenants); ``settings`` go to every
    child process."""
    env = Environment(root, prefix=prefix, settings=settings)
    options = tenants if isinstance(tenants, dict) else dict.fromkeys(tenants, ())
    try:
        env.dynalite = Dynalite(env, path=root / "dynalite" if on_disk else None)
        env.endpoint = env.dynalite.endpoint
        migrate = env.manage("migrate", "migrate", "--noinput")
        env.dynalite.start()
        create_tables = env.manage("create_tables", "create_tables")
        migrate.wait_ok()
        create_tables.wait_ok()
        started = [
            env.manage(f"create_tenant-{t}", "create_tenant", t, *args)
            for t, args in options.items()
        ]
        for proc in started:
            proc.wait_ok()
        yield env
    finally:
        env.close()


# --- a stack ------------------------------------------------------------------------------


@dataclass
class Server:
    port: int
    proc: Proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, token: str | None) -> str:
        return f"ws://127.0.0.1:{self.port}/ws" + (f"?token={token}" if token is not None else "")

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.proc.alive:
                raise self.proc.failure("exited during start-up")
            try:
                status, _, body = http_get(f"{self.url}/healthz", timeout=3)
            except OSError as exc:
                last = type(exc).__name__
            else:
                if status == 200:
                    return
                last = f"{status} {body[:200]}"
            time.sleep(0.1)
        raise self.proc.failure(f"/healthz not 200 within {timeout}s (last: {last})")


class Stack:
    """Servers and workers (sharing one Redis, in Redis mode)."""

    def __init__(self, e2e: Environment, name: str, env: dict[str, str] | None = None) -> None:
        self.e2e = e2e
        self.name = name
        self.extra_env = dict(env or {})
        self.redis_url: str | None = None
        self.redis: Proc | None = None
        self.started: list[Proc] = []
        self.servers: list[Server] = []
        self.workers: list[Proc] = []

    @property
    def endpoint(self) -> str:
        return self.e2e.endpoint

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>`` of the first server."""
        return self.servers[0].url

    @property
    def ws(self) -> str:
        """``ws://127.0.0.1:<port>`` of the first server (append the path)."""
        return self.base.replace("http://", "ws://", 1)

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint of the first server, without a token."""
        return self.servers[0].ws_url(None)

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """The processes by role: ``server`` (``server1``...), ``worker0``..., ``redis``."""
        named = {f"server{i or ''}": s.proc.popen for i, s in enumerate(self.servers)}
        named.update({f"worker{i}": w.popen for i, w in enumerate(self.workers)})
        if self.redis is not None:
            named["redis"] = self.redis.popen
        return named

    def manage(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``manage.py ARGS`` to completion with the stack's settings; its stdout
        (RuntimeError with the output when it fails)."""
        return self._manage(args[0], *args).wait_ok(timeout).strip()

    def issue_token(self, user: str, tenant: str = "demo", ttl: int = 3600) -> str:
        """A token from ``manage.py issue_token`` (what an operator would hand out)."""
        return self.manage(
            "issue_token", "--tenant", tenant, "--user", user, "--ttl", str(ttl)
        ).splitlines()[-1]

    def server_log(self, server: int = 0) -> str:
        """What a server wrote so far (stdout, then stderr), for failure messages."""
        proc = self.servers[server].proc
        return proc.output() + proc.errors()

    def rss_kib(self, role: str) -> int:
        """Resident memory of a process (Linux /proc), in KiB; 0 when it is gone."""
        try:
            status = Path(f"/proc/{self.procs[role].pid}/status").read_text()
        except OSError:
            return 0
        return next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0
        )

    def metric(self, name: str, labels: str = "", server: int = 0) -> float:
        """One sample from a server's /metrics (0 when absent)."""
        _, _, text = http_get(f"{self.servers[server].url}/metrics")
        prefix = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(prefix + " "):
                return float(line.split()[-1])
        return 0.0

    @property
    def prefix(self) -> str:
        return self.e2e.prefix

    def user(self, name: str) -> str:
        """The user id behind ``name`` in this stack's tokens."""
        return f"{self.name}-{name}"

    def env(self, **extra: str) -> dict[str, str]:
        env = self.e2e.env(**self.extra_env)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update(extra)
        return env

    def _manage(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(
            f"{self.name}-{name}",
            [PYTHON, MANAGE, *args],
            env=env or self.env(),
            log_dir=self.e2e.log_dir,
        )
        self.started.append(proc)
        return proc

    def start_redis(self, port: int | None = None) -> None:
        """redis-server on ``port`` (default: a free one); ``self.redis`` is its process,
        so a test can kill it and start it again on the same port."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/bootstrap installs it)")
        port = port or localserver.free_port()
        workdir = self.e2e.root / f"redis-{self.name}"
        workdir.mkdir(exist_ok=True)
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        proc = Proc(
            f"{self.name}-redis",
            [*args, "--dir", str(workdir)],
            env=os.environ.copy(),
            log_dir=self.e2e.log_dir,
        )
        self.started.append(proc)
        self.redis = proc
        deadline = time.monotonic() + 15
        while not _port_answers_ping(port):
            if not proc.alive or time.monotonic() > deadline:
                raise proc.failure("redis-server did not answer PING")
            time.sleep(0.05)
        self.redis_url = f"redis://127.0.0.1:{port}/0"

    def start_server(
        self, worker: bool | None = None, *, wait: bool = True, server: str | None = None
    ) -> Server:
        """``manage.py serve`` on a free port; ``worker`` None = the default choice,
        ``server`` None = the default ASGI server."""
        port = localserver.free_port()
        args = ["serve", "--port", str(port)]
        if server is not None:
            args += ["--server", server]
        if worker is not None:
            args.append("--with-worker" if worker else "--no-worker")
        server = Server(port, self._manage(f"serve{len(self.servers)}", *args))
        self.servers.append(server)
        if wait:
            server.wait_healthy()
        return server

    def start_worker(
        self, *args: str, wait: bool = True, env: dict[str, str] | None = None
    ) -> Proc:
        """``manage.py process_requests``; waits until it says it is running."""
        proc = self._manage(
            f"worker{len(self.workers)}", "process_requests", *args, env=self.env(**(env or {}))
        )
        self.workers.append(proc)
        if wait:
            proc.wait_for_output("running")
        return proc

    def token(self, user: str, tenant: str = "demo") -> str:
        return self.e2e.mint(self.user(user), tenant)

    def client(self, user: str = "alice", tenant: str = "demo", server: int = 0) -> WSClientContext:
        """A collecting WebSocket client of ``user`` (a minted token) on a server."""
        return open_client(self.servers[server].ws_url(self.token(user, tenant)))

    def configure_store(self) -> None:
        """Point this (pytest) process's stores at the stack's tables."""
        base.configure(base.StoreConfig(endpoint_url=self.endpoint, table_prefix=self.prefix))

    async def read_record(self, request_id: str, user: str = "alice", tenant: str = "demo") -> Any:
        """The stored RequestRecord (with ``attempts`` and the rest of the private fields)."""
        return (await self.read_records([request_id], user, tenant))[0]

    async def read_records(
        self, request_ids: list[str], user: str = "alice", tenant: str = "demo"
    ) -> list[Any]:
        """Stored RequestRecords, read straight from DynamoDB (consistent reads)."""
        from storage.requests.model import RequestKey
        from storage.requests.store import request_store

        self.configure_store()
        keys = [RequestKey(tenant, self.user(user), r) for r in request_ids]
        return await asyncio.to_thread(lambda: [request_store.get(k) for k in keys])

    def close(self) -> None:
        """Stop workers and servers together (SIGTERM, bounded wait), then Redis."""
        first = [*self.workers, *(s.proc for s in self.servers)]
        rest = [p for p in self.started if p not in first]
        for group in (first, rest):
            for proc in group:
                if proc.alive:
                    proc.popen.send_signal(signal.SIGTERM)
            for proc in group:
                proc.stop()
        for proc in self.started:
            with contextlib.suppress(ValueError):
                LIVE.remove(proc)


@contextlib.contextmanager
def running_stack(
    e2e: Environment,
    name: str,
    *,
    redis: bool = False,
    servers: int = 1,
    server_worker: bool | None = None,
    workers: int = 0,
    worker_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    server: str | None = None,
) -> Iterator[Stack]:
    """Start a stack, yield it, always stop it."""
    stack = Stack(e2e, name, env)
    try:
        if redis:
            stack.start_redis()
        started = [
            stack.start_server(server_worker, wait=False, server=server) for _ in range(servers)
        ]
        for _ in range(workers):
            stack.start_worker(*worker_args, wait=False)
        for server in started:
            server.wait_healthy()
        for worker in stack.workers:
            worker.wait_for_output("running")
        yield stack
    finally:
        stack.close()


# --- the benchmark's stack -------------------------------------------------------------------

# What the benchmark's servers run with: its baseline endpoint and actions, no rate limit,
# no poll noise in the counts (wake-ups carry the load), few log lines.
BENCH_SETTINGS = {
    "DJANGO_DEBUG": "1",
    "STREAMER_BENCH": "1",
    "STREAMER_RATE_LIMIT_FRAMES": "1000000",
    "STREAMER_POLL_INTERVAL_S": "30",
    "LOG_LEVEL": "WARNING",
}


def token(user: str, tenant: str = "bench") -> str:
    """A token the stacks accept (HS256 with the stacks' secret)."""
    return jwt.encode(
        {"sub": user, "tenant_id": tenant, "exp": int(time.time()) + 3600},
        JWT_SECRET,
        algorithm="HS256",
    )


async def connect(url: str) -> Any:
    """A WebSocket client without compression or a size limit."""
    return await websockets.connect(url, compression=None, max_size=None, open_timeout=30)


@contextlib.contextmanager
def local_stack(
    redis: bool = False,
    workers: int = 0,
    server: str | None = None,
    env: dict[str, str] | None = None,
    servers: int = 1,
) -> Iterator[Stack]:
    """dynalite (on disk) + tables + tenants ``bench`` and ``fan`` (no connection limit)
    + ``servers`` × ``serve --server`` (serve's default when None) with its in-process worker, or Redis and
    ``workers`` worker processes; ``env`` overrides the stack's settings."""
    root = Path(tempfile.mkdtemp(prefix="streamer-bench-"))
    unlimited = ("--max-connections", "0")
    try:
        with (
            environment(
                root,
                on_disk=True,
                tenants={"bench": unlimited, "fan": unlimited},
                prefix="bench",
                settings={**BENCH_SETTINGS, **(env or {})},
            ) as storage,
            running_stack(
                storage,
                "bench",
                redis=redis,
                servers=servers,
                server_worker=not redis,
                workers=workers,
                worker_args=("--concurrency", "16"),
                server=server,
            ) as stack,
        ):
            yield stack
    finally:
        shutil.rmtree(root, ignore_errors=True)
