"""Measurements the benchmark sections share: echo round trips, connects per second,
idle sockets and their memory, fan-out of one frame, on any stack of bench/stack.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from bench.stack import Stack, connect, token
from storage.localserver import free_port

ECHO_MSG = '{"action":"echo","payload":{"n":1}}'
#: Longest wait for a server to finish the disconnects of the sockets it held.
SETTLE_S = 300.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
    }


# -- echo ---------------------------------------------------------------------------------
async def round_trips(url: str, n: int, message: bytes | str) -> list[float]:
    ws = await connect(url)
    try:
        for _ in range(50):  # warm-up
            await ws.send(message)
            await ws.recv()
        out = []
        for _ in range(n):
            t = time.perf_counter()
            await ws.send(message)
            await ws.recv()
            out.append((time.perf_counter() - t) * 1000)
        return out
    finally:
        await ws.close()


RAW_ECHO_SERVER = """
import asyncio, sys, websockets
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def raw_echo_server() -> AsyncIterator[str]:
    """A minimal ``websockets`` echo server in its own process (the floor); yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", RAW_ECHO_SERVER, str(port)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


async def raw_floor(n: int, message: str) -> list[float]:
    """``n`` round trips to a fresh raw ``websockets`` echo server."""
    async with raw_echo_server() as url:
        return await round_trips(url, n, message)


async def echo_rounds(urls: dict[str, str], n: int, rounds: int = 4) -> dict[str, list[float]]:
    """``n`` round trips to each URL, taken in ``rounds`` alternating slices so that a
    change in the machine's load during the run shows up in every series alike."""
    out: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            out[name] += await round_trips(url, max(1, n // rounds), ECHO_MSG)
    return out


# -- connects -------------------------------------------------------------------------------
async def connect_rate(url_for: Callable[[int], str], n: int, concurrency: int = 20) -> float:
    """Connects (open + close) per second with ``concurrency`` in flight."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            ws = await connect(url_for(i))
            await ws.close()

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t)


async def sequential_connect_echo_rate(url_for: Callable[[int], str], n: int) -> float:
    """One client at a time: connect, one echo, close — per second."""
    t = time.perf_counter()
    for i in range(n):
        ws = await connect(url_for(i))
        await ws.send(ECHO_MSG)
        await ws.recv()
        await ws.close()
    return n / (time.perf_counter() - t)


# -- idle connections -------------------------------------------------------------------------
class HeldSockets:
    """Full-stack sockets opened against one server and kept open, so that its memory
    and its echo latency can be read at growing counts."""

    def __init__(self, stack: Stack, prefix: str = "idle") -> None:
        self.stack = stack
        self.prefix = prefix
        self.sockets: list[Any] = []
        self.failed = 0

    async def grow_to(self, n: int, concurrency: int = 50) -> None:
        """Open sockets until ``n`` are held (failures are counted, not retried)."""
        sem = asyncio.Semaphore(concurrency)
        base = self.stack.ws

        async def one(i: int) -> None:
            async with sem:
                self.sockets.append(await connect(f"{base}/ws?token={token(f'{self.prefix}{i}')}"))

        start = len(self.sockets) + self.failed
        results = await asyncio.gather(
            *(one(i) for i in range(start, start + n - len(self.sockets))), return_exceptions=True
        )
        self.failed += sum(isinstance(r, BaseException) for r in results)

    async def close_and_settle(self) -> None:
        """Close every socket, then wait until the server has finished its disconnects
        (one DeleteItem each), so nothing measured next sees that backlog."""
        deletes = self._deletes() or 0.0
        held = len(self.sockets)
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        self.sockets.clear()
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            done = self._deletes()
            if done is not None and done - deletes >= held:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)

    def _deletes(self) -> float | None:
        """The server's DeleteItem count; None while it is too busy to answer /metrics
        (10,000 disconnects at once keep it busy for a while)."""
        try:
            return self.stack.metric("streamer_dynamodb_calls_total", 'operation="DeleteItem"')
        except OSError:
            return None


async def idle_curve(stack: Stack, levels: list[int], echo_n: int = 100) -> list[dict[str, Any]]:
    """Hold 1st, 2nd... ``levels`` sockets on a fresh server: at each, memory per held
    socket (RSS growth over the start) and the echo p50 of one more socket."""
    before = stack.rss_kib("server")
    held = HeldSockets(stack)
    points = []
    try:
        for level in levels:
            t = time.perf_counter()
            await held.grow_to(level)
            opened_s = time.perf_counter() - t
            await asyncio.sleep(2)  # let the server's registrations finish
            after = stack.rss_kib("server")
            echo = await round_trips(f"{stack.ws}/ws?token={token('probe')}", echo_n, ECHO_MSG)
            n = len(held.sockets)
            points.append(
                {
                    "held": n,
                    "failed": held.failed,
                    "open_s": round(opened_s, 2),
                    "rss_before_mib": round(before / 1024, 1),
                    "rss_after_mib": round(after / 1024, 1),
                    "kib_per_connection": round((after - before) / max(1, n), 1),
                    "echo_p50_ms_while_held": round(pct(echo, 50), 3),
                }
            )
    finally:
        await held.close_and_settle()
    return points


async def idle_connections(stack: Stack, n: int) -> dict[str, Any]:
    """``n`` idle sockets held at once on a fresh server (one point of :func:`idle_curve`)."""
    return (await idle_curve(stack, [n]))[-1]


# -- fan-out ---------------------------------------------------------------------------------
async def fan_out(stack: Stack, n: int) -> dict[str, Any]:
    api_key = stack.manage(
        "shell",
        "-c",
        "from connections.models import ApiKey, Tenant; print(ApiKey.issue(Tenant.objects.get(pk='fan'))[1])",
    ).splitlines()[-1]
    sem = asyncio.Semaphore(50)
    sockets: list[Any] = []

    async def one(i: int) -> None:
        async with sem:
            sockets.append(await connect(f"{stack.ws}/ws?token={token(f'f{i}', 'fan')}"))

    await asyncio.gather(*(one(i) for i in range(n)))
    got: list[float] = []

    async def wait(ws: Any) -> None:
        frame = orjson.loads(await ws.recv())
        if frame.get("type") == "notice":
            got.append(time.perf_counter())

    waiters = [asyncio.create_task(wait(ws)) for ws in sockets]
    body = orjson.dumps({"frame": {"type": "notice", "n": 1}})
    request = urllib.request.Request(
        f"{stack.base}/api/v1/publish",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    t = time.perf_counter()
    response = await asyncio.to_thread(
        lambda: json.loads(urllib.request.urlopen(request, timeout=60).read())
    )
    await asyncio.wait(waiters, timeout=30)
    for task in waiters:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "connections": n,
        "delivered_reported": response.get("delivered"),
        "received": len(got),
        "lost": n - len(got),
        "last_delivery_ms": round((max(got) - t) * 1000, 1) if got else None,
    }


# -- DynamoDB calls counted by the server ------------------------------------------------------
def calls(stack: Stack) -> dict[str, float]:
    """The server's DynamoDB calls so far, by operation (its /metrics counter)."""
    text = urllib.request.urlopen(f"{stack.base}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("streamer_dynamodb_calls_total{"):
            op = line.split('operation="', 1)[1].split('"', 1)[0]
            out[op] = float(line.split()[-1])
    return out


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """The calls made between two readings of :func:`calls`."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def writes(ops: dict[str, float]) -> float:
    """How many of ``ops`` are writes."""
    return sum(
        v for k, v in ops.items() if k in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem")
    )
