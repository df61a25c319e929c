"""Load and soak: many clients on real sockets against ``serve`` with its in-process
worker (dynalite behind it) for a bounded time, with random cancels, disconnects (clean
closes and dropped TCP connections), reconnects that resume through
``request.status``, and hostile probes at other users' requests.

An invariant checker then verifies, from every frame every connection received and from
storage:

* no acknowledged request is lost: each ends COMPLETED or CANCELLED in storage, and its
  terminal frame (if one was seen) agrees with that status;
* the connection that was waiting for a request (its sender, or the connection that
  resumed it while it was still running) got exactly one terminal frame;
* per connection and request: acknowledgment first, progress never decreasing, at most
  one terminal frame and nothing after it;
* no frame about a request reached a connection that neither sent nor subscribed to it
  (same-user sibling connections and other tenants included);
* the server's memory (RSS, sampled every second) is flat over the second half.

Size and length come from the environment: ``SOAK_CLIENTS`` (default 120),
``SOAK_SECONDS`` (default 30), ``SOAK_SEED``; docs/reliability.md has a longer run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import connect

from bench.stack import Environment, Stack, running_stack
from bench.wsclient import TERMINAL_TYPES, WSClient
from tests.reliability.conftest import env_int, rss_kib

pytestmark = pytest.mark.e2e

CLIENTS = env_int("SOAK_CLIENTS", 120)
SECONDS = env_int("SOAK_SECONDS", 30)
SEED = env_int("SOAK_SEED", 20_261_125)
DRAIN_S = 60
P_ECHO, P_PROBE, P_CANCEL, P_DISCONNECT = 0.08, 0.04, 0.12, 0.12
DURATIONS = (0, 0, 0.2, 0.5, 1.0, 2.0)
# Memory: the RSS at the end of the soak may exceed the start of its second half by at
# most this much (generous: a leak of a few KiB per request would show over a long run).
RSS_GROWTH_BOUND_KIB = 64 * 1024


@dataclass(eq=False)
class Conn:
    """One socket of one client: what it may legitimately hear about."""

    ws: WSClient
    allowed: set[str] = field(default_factory=set)  # sent or subscribed request ids
    sent: set[str] = field(default_factory=set)


@dataclass(eq=False)
class Req:
    request_id: str
    owner: SoakClient
    waiter: Conn | None  # the connection that must get its terminal frame
    cancel_asked: bool = False
    final_from_status: str | None = None  # a resume found it already final


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def violation(self, text: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(text)
        self.counts["violations"] += 1


class SoakClient:
    """One simulated user agent: connects, sends requests, cancels, drops, resumes."""

    def __init__(
        self, index: int, stack: Stack, tally: Tally, everyone: list[SoakClient], seed: int
    ) -> None:
        self.name = f"c{index}"
        # Pairs of clients share a user (sibling connections); every tenth is in the
        # other tenant, with a user id that also exists in demo.
        self.user = f"u{index // 2}"
        self.tenant = "other" if index % 10 == 9 else "demo"
        self.stack = stack
        self.tally = tally
        self.everyone = everyone
        self.rng = random.Random(seed * 1000 + index)
        self.conn: Conn | None = None
        self.conns: list[Conn] = []
        self.reqs: dict[str, Req] = {}
        self.counter = 0

    @property
    def owner(self) -> tuple[str, str]:
        return (self.tenant, self.user)

    async def open(self) -> Conn:
        url = self.stack.servers[0].ws_url(self.stack.token(self.user, self.tenant))
        for attempt in range(20):
            try:
                ws = await connect(
                    url, open_timeout=15, close_timeout=3, ping_interval=None, max_size=2**22
                )
            except (OSError, TimeoutError) as exc:
                self.tally.add(f"connect retry ({type(exc).__name__})")
                await asyncio.sleep(0.1 * (attempt + 1))
                continue
            conn = Conn(WSClient(ws))
            self.conns.append(conn)
            self.tally.add("connections")
            return conn
        raise AssertionError(f"{self.name} could not connect")

    async def ensure_connected(self) -> Conn:
        if self.conn is not None and not self.conn.ws.closed:
            return self.conn
        if self.conn is not None:
            self.tally.violation(
                f"{self.name}: the server closed a socket ({self.conn.ws.close_code})"
            )
        reconnect = bool(self.conns)
        conn = self.conn = await self.open()
        if reconnect:
            self.tally.add("reconnects")
            for req in list(self.reqs.values()):
                if req.waiter is None and req.final_from_status is None and not self.finished(req):
                    await self.resume(conn, req)
        return conn

    def finished(self, req: Req) -> bool:
        """A terminal frame for it reached one of this client's connections."""
        return any(
            f["type"] in TERMINAL_TYPES for c in self.conns for f in c.ws.about(req.request_id)
        )

    async def resume(self, conn: Conn, req: Req) -> None:
        conn.allowed.add(req.request_id)
        answer = await conn.ws.call(
            "request.status", {"request_id": req.request_id, "subscribe": True}, within=30
        )
        self.tally.add("resumes")
        if answer["type"] != "response":
            self.tally.violation(f"resume of {req.request_id}: {answer}")
            return
        status = answer["data"]["status"]
        if status in ("COMPLETED", "CANCELLED", "FAILED"):
            req.final_from_status = status
            self.tally.add("resumed already final")
        else:
            req.waiter = conn
            self.tally.add("resumed live")

    async def disconnect(self) -> None:
        conn, self.conn = self.conn, None
        assert conn is not None
        if self.rng.random() < 0.5:
            conn.ws.ws.transport.abort()  # the TCP connection just drops
            self.tally.add("disconnects (dropped)")
        else:
            self.tally.add("disconnects (clean)")
        await conn.ws.close()
        for req in self.reqs.values():
            if req.waiter is conn and not any(
                f["type"] in TERMINAL_TYPES for f in conn.ws.about(req.request_id)
            ):
                req.waiter = None

    async def echo(self, conn: Conn) -> None:
        answer = await conn.ws.call("echo", {"n": self.counter}, within=30)
        self.tally.add("echoes")
        if answer.get("data") != {"echo": {"n": self.counter}}:
            self.tally.violation(f"echo: {answer}")

    async def probe(self, conn: Conn) -> None:
        """Ask for, and subscribe to, someone else's request: NOT_FOUND, and silence."""
        others = [c for c in self.everyone if c.owner != self.owner and c.reqs]
        if not others:
            return
        victim = self.rng.choice(others)
        request_id = self.rng.choice(list(victim.reqs))
        action = self.rng.choice(["request.status", "request.cancel"])
        answer = await conn.ws.call(action, {"request_id": request_id}, within=30)
        self.tally.add("hostile probes")
        if answer["type"] != "error" or answer["error"]["code"] != "NOT_FOUND":
            self.tally.violation(f"{self.owner} reached {victim.owner}'s {request_id}: {answer}")

    async def one_request(self, conn: Conn) -> None:
        self.counter += 1
        request_id = f"{self.name}-{self.counter}-{uuid.uuid4().hex[:4]}"
        duration = self.rng.choice(DURATIONS)
        payload = {"duration_s": duration, "steps": self.rng.randint(1, 8), "max_requests": 50}
        conn.allowed.add(request_id)
        conn.sent.add(request_id)
        ack = await conn.ws.submit(request_id, payload, within=30)
        self.tally.add("requests sent")
        if ack["type"] != "acknowledgment":
            self.tally.add(f"refused ({ack['error']['code']})")
            if ack["error"]["code"] not in ("RATE_LIMITED", "SERVICE_UNAVAILABLE"):
                self.tally.violation(f"{request_id} refused: {ack}")
            return
        self.tally.add("acknowledged")
        req = self.reqs[request_id] = Req(request_id, self, conn)
        roll = self.rng.random()
        if roll < P_CANCEL + P_DISCONNECT:
            # Act at once (the request is most likely still PENDING) or once it has
            # started (PROCESSING), or after it ended for the quickest ones.
            if self.rng.random() < 0.5:
                await conn.ws.wait_for(
                    lambda f: (
                        f.get("request_id") == request_id
                        and f["type"] in ("progress", *TERMINAL_TYPES)
                    ),
                    within=60,
                    what=f"progress of {request_id}",
                )
            if roll < P_CANCEL:
                req.cancel_asked = True
                answer = await conn.ws.call("request.cancel", {"request_id": request_id}, within=30)
                self.tally.add("cancels")
                if answer["type"] != "response" or answer["data"]["status"] not in (
                    "CANCELLED",
                    "COMPLETED",
                ):
                    self.tally.violation(f"cancel of {request_id}: {answer}")
                await conn.ws.terminal(request_id, within=60)
            else:
                await self.disconnect()
            return
        await conn.ws.terminal(request_id, within=60)

    async def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            conn = await self.ensure_connected()
            roll = self.rng.random()
            if roll < P_ECHO:
                await self.echo(conn)
            elif roll < P_ECHO + P_PROBE:
                await self.probe(conn)
            else:
                await self.one_request(conn)

    async def drain(self, deadline: float) -> None:
        """After the soak: resume whatever is still open and wait for its end."""
        await self.ensure_connected()
        for req in self.reqs.values():
            if req.waiter is not None and req.final_from_status is None:
                left = max(1.0, deadline - time.monotonic())
                await req.waiter.ws.terminal(req.request_id, within=left)

    async def close(self) -> None:
        for conn in self.conns:
            await conn.ws.close()


def check_connection(client: SoakClient, conn: Conn, tally: Tally) -> None:
    by_request: dict[str, list[dict[str, Any]]] = {}
    for frame in conn.ws.frames:
        tally.add("frames received")
        request_id = frame.get("request_id")
        if request_id is None:
            continue
        if request_id.startswith("call-"):
            if frame["type"] not in ("response", "error"):
                tally.violation(f"{frame['type']} frame about a call id: {frame}")
            continue
        if request_id not in conn.allowed:
            tally.violation(f"{client.name} heard about {request_id}, not its own: {frame['type']}")
            continue
        by_request.setdefault(request_id, []).append(frame)
    for request_id, frames in by_request.items():
        types = [f["type"] for f in frames]
        terminals = [i for i, t in enumerate(types) if t in TERMINAL_TYPES]
        if len(terminals) > 1:
            tally.violation(f"{request_id}: {len(terminals)} terminal frames on one socket {types}")
        if terminals and terminals[0] != len(types) - 1:
            tally.violation(f"{request_id}: frames after the terminal one {types}")
        if request_id in conn.sent and types[0] != "acknowledgment":
            tally.violation(f"{request_id}: acknowledgment not first {types}")
        progress = [f["percentage"] for f in frames if f["type"] == "progress"]
        tally.add("progress frames", len(progress))
        if progress != sorted(progress):
            tally.violation(f"{request_id}: progress went down {progress}")


@pytest.fixture(scope="module")
def stack(e2e: Environment) -> Iterator[Stack]:
    env = {"STREAMER_WORKER_CONCURRENCY": "32", "STREAMER_POLL_INTERVAL_S": "0.5"}
    with running_stack(e2e, "soak", env=env) as running:
        yield running


async def sample_rss(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    started = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - started, rss_kib(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


@pytest.mark.timeout(SECONDS + DRAIN_S + 120)
async def test_soak(stack: Stack, figures: dict[str, str]) -> None:
    tally = Tally()
    clients: list[SoakClient] = []
    clients.extend(SoakClient(i, stack, tally, clients, SEED) for i in range(CLIENTS))
    server = stack.servers[0].proc
    samples: list[tuple[float, int]] = []
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server.pid, samples, stop_sampling))
    started = time.monotonic()
    try:
        deadline = started + SECONDS
        results = await asyncio.gather(*(c.run(deadline) for c in clients), return_exceptions=True)
        for client, result in zip(clients, results, strict=True):
            if isinstance(result, BaseException):
                tally.violation(f"{client.name} failed: {result!r}")
        soak_s = time.monotonic() - started
        drain_deadline = time.monotonic() + DRAIN_S
        results = await asyncio.gather(
            *(c.drain(drain_deadline) for c in clients), return_exceptions=True
        )
        for client, result in zip(clients, results, strict=True):
            if isinstance(result, BaseException):
                tally.violation(f"{client.name} drain failed: {result!r}")
        stop_sampling.set()
        await sampler
    finally:
        stop_sampling.set()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    # --- the invariants -------------------------------------------------------------------
    for client in clients:
        for conn in client.conns:
            check_connection(client, conn, tally)

    outcome: Counter[str] = Counter()
    for client in clients:
        if not client.reqs:
            continue
        ids = list(client.reqs)
        stored = await stack.read_records(ids, client.user, client.tenant)
        for record in stored:
            req = client.reqs[record.request_id]
            status = str(record.status)
            outcome[status] += 1
            if status not in ("COMPLETED", "CANCELLED"):
                tally.violation(f"{req.request_id} ended {status}")
            if status == "CANCELLED" and not req.cancel_asked:
                tally.violation(f"{req.request_id} cancelled though nobody asked")
            if req.final_from_status is not None and req.final_from_status != status:
                tally.violation(
                    f"{req.request_id}: resume said {req.final_from_status}, now {status}"
                )
            if req.waiter is not None:
                frames = [
                    f for f in req.waiter.ws.about(req.request_id) if f["type"] in TERMINAL_TYPES
                ]
                if len(frames) != 1:
                    tally.violation(
                        f"{req.request_id}: waiting socket got {len(frames)} terminal frames"
                    )
                    continue
                kind = frames[0]["type"]
                expected = "complete" if status == "COMPLETED" else "error"
                if kind != expected or (
                    kind == "error" and frames[0]["error"]["code"] != "CANCELLED"
                ):
                    tally.violation(f"{req.request_id}: terminal {frames[0]} but stored {status}")
        missing = len(ids) - len(stored)
        if missing:
            tally.violation(f"{client.name}: {missing} acknowledged requests not in storage")
            outcome["missing"] += missing

    second_half = [kib for t, kib in samples if t >= SECONDS / 2]
    growth_kib = second_half[-1] - second_half[0] if len(second_half) >= 2 else 0
    counts = tally.counts
    acknowledged = counts["acknowledged"]
    lost = acknowledged - outcome["COMPLETED"] - outcome["CANCELLED"]
    figures["soak"] = (
        f"{CLIENTS} clients for {soak_s:.0f} s (+ drain): {counts['requests sent']} requests "
        f"sent, {acknowledged} acknowledged → {outcome['COMPLETED']} COMPLETED + "
        f"{outcome['CANCELLED']} CANCELLED ({counts['cancels']} cancels asked); "
        f"{counts['disconnects (clean)']} clean + {counts['disconnects (dropped)']} dropped "
        f"disconnects, {counts['reconnects']} reconnects, {counts['resumes']} resumes "
        f"({counts['resumed live']} live, {counts['resumed already final']} already final); "
        f"{counts['echoes']} echoes, {counts['hostile probes']} cross-user probes; "
        f"{counts['frames received']} frames received ({counts['progress frames']} progress); "
        f"lost: {lost}; invariant violations: {counts['violations']}"
        + "".join(f"; {k}: {v}" for k, v in counts.items() if k.startswith("connect retry"))
    )
    if second_half:
        figures["soak memory (serve RSS)"] = (
            f"start {samples[0][1] / 1024:.0f} MiB, second half {second_half[0] / 1024:.0f} → "
            f"{second_half[-1] / 1024:.0f} MiB (max {max(second_half) / 1024:.0f} MiB, "
            f"{len(samples)} samples)"
        )
    assert tally.violations == [], "\n".join(tally.violations)
    assert lost == 0
    assert acknowledged > CLIENTS, "the soak hardly ran"
    assert growth_kib <= RSS_GROWTH_BOUND_KIB, samples
