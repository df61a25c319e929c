"""End-to-end fixtures: the real stack as separate processes on 127.0.0.1.

* ``e2e`` (session): an in-memory dynalite server with every table under a unique
  ``STREAMER_TABLE_PREFIX`` (``manage.py create_tables``), a temporary ``DATA_DIR`` with
  the Django migrations applied and the tenants ``demo`` and ``other``, a JWT secret, and
  a token minted by ``manage.py issue_token`` (more are minted with PyJWT, same secret).
* :func:`running_stack`: a context manager the test modules use in their module-scoped
  fixtures: optionally ``redis-server`` on a free port, N ``manage.py serve`` processes
  (each waited for until ``GET /healthz`` is 200) and N ``manage.py process_requests``
  workers. Stacks share the tables; each stack namespaces its user ids (``local-alice``),
  so request ids never clash between modules.

Every process writes its stdout/stderr to files under pytest's temporary directory; a
failing test gets the tails of every process still registered appended to its report.
Every process is stopped (SIGTERM, then SIGKILL after a bound) when its fixture ends,
also on failure. Nothing here uses the Django test database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from storage import base, localserver

REPO_ROOT = Path(__file__).resolve().parents[2]
MANAGE = str(REPO_ROOT / "manage.py")
PYTHON = sys.executable
JWT_SECRET = "e2e-" + secrets.token_hex(24)
E2E_SECRET_KEY = "e2e-django-" + secrets.token_hex(24)
START_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 10.0
TERMINAL_TYPES = ("complete", "error")

# Processes whose log tails a failing test gets in its report (see the hook below).
_LIVE: list[Proc] = []
_names = itertools.count()
# Numbers the tests measured, printed in the terminal summary.
MEASUREMENTS: dict[str, str] = {}


def _missing(what: str) -> None:
    """A required binary is absent: the test fails (scripts/bootstrap installs it)."""
    pytest.fail(f"{what} is not installed (scripts/bootstrap installs it)")


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
        _LIVE.append(self)

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
            _LIVE.remove(self)
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


# --- the session: storage, tenants, tokens -------------------------------------------------


class E2E:
    """What every stack of the session shares."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_dir = root / "logs"
        self.data_dir = root / "data"
        self.log_dir.mkdir()
        self.data_dir.mkdir()
        self.endpoint = ""
        self.prefix = f"e2e-{secrets.token_hex(4)}"
        self.procs: list[Proc] = []
        self.issued_token = ""
        self.dynalite: Dynalite | None = None  # set by e2e_environment()

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a child process: ours minus anything that configures
        Streamer, plus the e2e settings."""
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
            DJANGO_SECRET_KEY=E2E_SECRET_KEY,
            # The servers listen on plain HTTP on loopback.
            DJANGO_SECURE_SSL_REDIRECT="0",
            DJANGO_SESSION_COOKIE_SECURE="0",
            DJANGO_CSRF_COOKIE_SECURE="0",
            AWS_DEFAULT_REGION="us-east-1",
            LOG_LEVEL="INFO",
            STREAMER_POLL_INTERVAL_S="0.2",
        )
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
                _LIVE.remove(proc)


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    node = shutil.which("node")
    if node is None or not localserver.DYNALITE.exists():
        _missing("dynalite (node and localdb/node_modules)")
    env = E2E(tmp_path_factory.mktemp("e2e"))
    try:
        port = localserver.free_port()
        env.endpoint = f"http://127.0.0.1:{port}"
        dynalite = env.start(
            "dynalite",
            [
                *(node, str(localserver.DYNALITE), "--host", "127.0.0.1", "--port", str(port)),
                *("--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"),
            ],
            os.environ.copy(),
        )
        migrate = env.manage("migrate", "migrate", "--noinput")
        issue = env.manage("issue_token", "issue_token", "--tenant", "demo", "--user", "alice")
        try:
            localserver.wait_until_up(env.endpoint, timeout_s=START_TIMEOUT_S)
        except TimeoutError:
            raise dynalite.failure("did not answer") from None
        create_tables = env.manage("create_tables", "create_tables")
        migrate.wait_ok()
        tenants = [env.manage(f"create_tenant-{t}", "create_tenant", t) for t in ("demo", "other")]
        env.issued_token = issue.wait_ok().strip().splitlines()[-1]
        for proc in [*tenants, create_tables]:
            proc.wait_ok()
        yield env
    finally:
        env.close()


@pytest.fixture(scope="session")
def measurements() -> dict[str, str]:
    """Record a measured number; printed at the end of the run."""
    return MEASUREMENTS


class Dynalite:
    """dynalite on a fixed port; on disk under ``path`` when given, so that
    :meth:`kill9` then :meth:`start` are a crash and a restart with the same data."""

    def __init__(self, e2e: E2E, *, path: Path | None = None, port: int | None = None) -> None:
        self.e2e = e2e
        self.path = path
        self.port = port or localserver.free_port()
        self.proc: Proc | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        """Start it (again) on the same port and data; returns once it answers."""
        node = shutil.which("node")
        if node is None or not localserver.DYNALITE.exists():
            _missing("dynalite (node and localdb/node_modules)")
        args = [node, str(localserver.DYNALITE), "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"]
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            args += ["--path", str(self.path)]
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
def e2e_environment(root: Path, *, on_disk: bool = False) -> Iterator[E2E]:
    """What the session fixture ``e2e`` sets up, for tests that need storage of their
    own: with ``on_disk`` dynalite keeps its data under ``root/dynalite`` on a fixed
    port, and ``env.dynalite`` can be killed and started again with the same data."""
    env = E2E(root)
    try:
        env.dynalite = Dynalite(env, path=root / "dynalite" if on_disk else None)
        env.endpoint = env.dynalite.endpoint
        migrate = env.manage("migrate", "migrate", "--noinput")
        env.dynalite.start()
        create_tables = env.manage("create_tables", "create_tables")
        migrate.wait_ok()
        tenants = [env.manage(f"create_tenant-{t}", "create_tenant", t) for t in ("demo", "other")]
        for proc in [*tenants, create_tables]:
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

    def __init__(self, e2e: E2E, name: str, env: dict[str, str] | None = None) -> None:
        self.e2e = e2e
        self.name = name
        self.extra_env = dict(env or {})
        self.redis_url: str | None = None
        self.redis: Proc | None = None
        self.procs: list[Proc] = []
        self.servers: list[Server] = []
        self.workers: list[Proc] = []

    @property
    def endpoint(self) -> str:
        return self.e2e.endpoint

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
        self.procs.append(proc)
        return proc

    def start_redis(self, port: int | None = None) -> None:
        """redis-server on ``port`` (default: a free one); ``self.redis`` is its process,
        so a test can kill it and start it again on the same port."""
        binary = shutil.which("redis-server")
        if binary is None:
            _missing("redis-server")
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
        self.procs.append(proc)
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
        rest = [p for p in self.procs if p not in first]
        for group in (first, rest):
            for proc in group:
                if proc.alive:
                    proc.popen.send_signal(signal.SIGTERM)
            for proc in group:
                proc.stop()
        for proc in self.procs:
            with contextlib.suppress(ValueError):
                _LIVE.remove(proc)


@contextlib.contextmanager
def running_stack(
    e2e: E2E,
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


# --- the WebSocket client ---------------------------------------------------------------------


class WSClient:
    """A websockets connection whose frames a background task collects, so a test can
    wait for a frame matching a predicate and later look at everything that arrived."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed = False
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                frame["_rx"] = time.perf_counter()
                self.frames.append(frame)
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._changed.set()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def send(self, frame: dict[str, Any] | str) -> float:
        """Send a frame; the perf_counter time it left."""
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        return time.perf_counter()

    async def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        within: float = 10.0,
        since: int = 0,
        what: str = "a frame",
    ) -> dict[str, Any]:
        """The first frame from index ``since`` on that matches ``predicate``."""
        deadline = asyncio.get_running_loop().time() + within
        index = since
        while True:
            self._changed.clear()
            for frame in self.frames[index:]:
                if predicate(frame):
                    return frame
            index = max(index, len(self.frames))
            if self.closed:
                raise AssertionError(
                    f"socket closed ({self.close_code}) while waiting for {what}: {self.brief()}"
                )
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {within}s waiting for {what}: {self.brief()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)

    def brief(self, last: int = 12) -> str:
        """The last frames received, shortened, for assertion messages."""
        shown = [
            {
                k: v
                for k, v in f.items()
                if k in ("type", "request_id", "percentage", "status", "error")
            }
            for f in self.frames[-last:]
        ]
        return f"{len(self.frames)} frames, last: {shown}"

    async def call(
        self, action: str, payload: dict[str, Any] | None = None, *, within: float = 10.0
    ) -> dict[str, Any]:
        """Run a synchronous action; its ``response`` or ``error`` frame."""
        request_id = f"call-{uuid.uuid4().hex[:12]}"
        since = len(self.frames)
        await self.send({"action": action, "id": request_id, "payload": payload or {}})
        return await self.wait_for(
            lambda f: f.get("request_id") == request_id and f["type"] in ("response", "error"),
            within=within,
            since=since,
            what=f"the answer to {action}",
        )

    async def submit(
        self,
        request_id: str,
        payload: dict[str, Any] | None = None,
        *,
        action: str = "generate_report",
        within: float = 10.0,
    ) -> dict[str, Any]:
        """Send an asynchronous request; its ``acknowledgment`` (or ``error``) frame."""
        since = len(self.frames)
        await self.send({"action": action, "id": request_id, "payload": payload or {}})
        return await self.wait_for(
            lambda f: (
                f.get("request_id") == request_id and f["type"] in ("acknowledgment", "error")
            ),
            within=within,
            since=since,
            what=f"the acknowledgment of {request_id}",
        )

    async def terminal(
        self, request_id: str, *, within: float = 15.0, since: int = 0
    ) -> dict[str, Any]:
        """The terminal (``complete``/``error``) frame of ``request_id``."""
        return await self.wait_for(
            lambda f: f.get("request_id") == request_id and f["type"] in TERMINAL_TYPES,
            within=within,
            since=since,
            what=f"the terminal frame of {request_id}",
        )

    def about(self, request_id: str, since: int = 0) -> list[dict[str, Any]]:
        """Every frame received about ``request_id`` (answers to ``call`` carry their own ids)."""
        return [f for f in self.frames[since:] if f.get("request_id") == request_id]

    async def wait_closed(self, within: float = 10.0) -> int | None:
        """Wait until the server closes the socket; its close code."""
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout=within)
        except TimeoutError:
            raise AssertionError(f"socket still open after {within}s: {self.brief()}") from None
        return self.close_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), timeout=3)
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


WSClientContext = contextlib.AbstractAsyncContextManager[WSClient]


@contextlib.asynccontextmanager
async def open_client(url: str) -> AsyncIterator[WSClient]:
    """Connect (no Origin header, like a non-browser client) and collect frames."""
    ws = await connect(url, open_timeout=10, close_timeout=3, ping_interval=None, max_size=2**22)
    client = WSClient(ws)
    try:
        yield client
    finally:
        await client.close()


# --- checks ---------------------------------------------------------------------------------


def check_request_stream(
    frames: list[dict[str, Any]], *, terminal: str = "complete", expect_ack: bool = True
) -> dict[str, Any]:
    """PROTOCOL.md §2.2 for one request on one connection: acknowledgment first (when
    this connection sent it), progress never decreasing, output seqs consecutive, exactly
    one terminal frame and nothing after it. Returns the terminal frame."""
    types = [f["type"] for f in frames]
    assert all(isinstance(f.get("timestamp"), int) for f in frames), frames
    terminals = [f for f in frames if f["type"] in TERMINAL_TYPES]
    assert len(terminals) == 1, f"expected one terminal frame, got {types}"
    assert frames[-1] is terminals[0], f"frames after the terminal frame: {types}"
    assert terminals[0]["type"] == terminal, terminals[0]
    if expect_ack:
        assert types[0] == "acknowledgment", types
        assert types.count("acknowledgment") == 1, types
    else:
        assert "acknowledgment" not in types, types
    percentages = [f["percentage"] for f in frames if f["type"] == "progress"]
    assert percentages == sorted(percentages), f"progress went down: {percentages}"
    assert all(0 <= p <= 100 for p in percentages), percentages
    assert set(types) <= {"acknowledgment", "progress", "output", *TERMINAL_TYPES}, types
    seqs = [f["seq"] for f in frames if f["type"] == "output"]
    if seqs:  # protocol 1.1: consecutive, without gap or duplicate, from where it started
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    return terminals[0]


def p50_ms(samples_s: list[float]) -> float:
    return statistics.median(samples_s) * 1000


# --- reporting --------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing e2e test shows the log tails of every process still registered."""
    report = yield
    if report.failed:
        for proc in list(_LIVE):
            report.sections.append((f"e2e process {proc.name}", proc.tail()))
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASUREMENTS:
        terminalreporter.section("e2e measurements")
        for name, value in MEASUREMENTS.items():
            terminalreporter.write_line(f"{name}: {value}")
