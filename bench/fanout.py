"""Fan-out through the per-process hub (issue 13, docs/performance.md): one frame
published to every socket of one tenant, timed from the publish to the last socket
that got it.

    python -m bench.fanout            # 1k, 2k, 5k, 10k on one server; 10k on 2 servers + Redis
    python -m bench.fanout --quick    # 250, 500, 1k; 1k on 2 servers

The sockets (tenant ``fan``, one user each) are held by several client processes
(bench/fanout_client.py), so reading them is not what is measured. The frame goes in
through ``POST /api/v1/publish`` on the first server. Budget: 10,000 sockets in one
server process, last delivery under 1 s, none lost; the 2-process run through Redis is
reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import urllib.request
from typing import Any

import orjson

from bench.stack import Server, Stack, local_stack, token
from streaming.management.commands.serve import DEFAULT_SERVER

BUDGET_SOCKETS = 10_000
BUDGET_MS = 1000.0
FULL_SIZES = (1000, 2000, 5000, 10_000)
QUICK_SIZES = (250, 500, 1000)
CLIENT_PROCESSES = 4
WAIT_S = 30.0
NOT_MEASURED = "not measured in the quick run"


class Client:
    """One client process (bench/fanout_client.py) and its command pipe."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.sockets = 0
        self.errors: dict[str, int] = {}

    @classmethod
    async def start(cls) -> Client:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.fanout_client",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(orjson.dumps(command) + b"\n")
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a fan-out client process exited")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    async def open(self, urls: list[str]) -> int:
        """Open more sockets; how many failed."""
        answer = await self.ask({"open": urls})
        self.sockets = answer["open"]
        self.errors = answer["errors"]
        return int(answer["failed"])

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def issue_api_key(stack: Stack, tenant: str = "fan") -> str:
    """A new API key of ``tenant`` (``manage.py shell`` on the stack)."""
    script = (
        "from connections.models import ApiKey, Tenant; "
        f"print(ApiKey.issue(Tenant.objects.get(pk='{tenant}'))[1])"
    )
    return stack.manage("shell", "-c", script).splitlines()[-1]


def post_publish(server: Server, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/v1/publish`` on ``server`` (body: ``frame`` and an optional audience);
    the decoded answer."""
    request = urllib.request.Request(
        f"{server.url}/api/v1/publish",
        data=orjson.dumps(body),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


async def curve(stack: Stack, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Grow the tenant's sockets to each size in turn (spread over the stack's servers
    and over the client processes) and publish one frame at each size."""
    key = issue_api_key(stack)
    clients = [await Client.start() for _ in range(CLIENT_PROCESSES)]
    points = []
    try:
        opened = failed = 0
        for size in sizes:
            shares: list[list[str]] = [[] for _ in clients]
            for i in range(opened, size):
                server = stack.servers[i % len(stack.servers)]
                shares[i % len(clients)].append(server.ws_url(token(f"fan{i}", "fan")))
            failed += sum(
                await asyncio.gather(*(c.open(s) for c, s in zip(clients, shares, strict=True)))
            )
            opened = size
            points.append(await one_frame(stack, key, clients, size, failed))
    finally:
        await asyncio.gather(*(c.stop() for c in clients))
    return points


async def one_frame(
    stack: Stack, key: str, clients: list[Client], size: int, failed: int
) -> dict[str, Any]:
    frame_id = f"fan-{size}-{time.monotonic_ns()}"
    waits = [asyncio.ensure_future(c.ask({"wait": frame_id, "timeout": WAIT_S})) for c in clients]
    started = time.monotonic()
    answer = await asyncio.to_thread(
        post_publish, stack.servers[0], key, {"frame": {"type": "bench.fan", "id": frame_id}}
    )
    answered_ms = (time.monotonic() - started) * 1000
    results = await asyncio.gather(*waits)
    received = sum(r["received"] for r in results)
    lasts = [r["last"] for r in results if r["last"] is not None]
    errors: dict[str, int] = {}
    for client in clients:
        for name, count in client.errors.items():
            errors[name] = errors.get(name, 0) + count
    return {
        "connections": size,
        "servers": len(stack.servers),
        "open": sum(c.sockets for c in clients),
        "connect_failed": failed,
        "connect_errors": errors,
        "received": received,
        "lost": sum(c.sockets for c in clients) - received,
        "duplicates": sum(r["duplicates"] for r in results),
        "last_delivery_ms": round((max(lasts) - started) * 1000, 1) if lasts else None,
        "publish_answered_ms": round(answered_ms, 1),
        "delivered_reported": answer.get("delivered"),
        "relayed": answer.get("relayed"),
    }


async def measure(quick: bool, server: str = DEFAULT_SERVER) -> dict[str, Any]:
    """The one-process curve and the 2-process run through Redis."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers and clients inherit it
    sizes = QUICK_SIZES if quick else FULL_SIZES
    with local_stack(server=server) as stack:
        one_process = await curve(stack, sizes)
    with local_stack(redis=True, servers=2, server=server) as stack:
        two_processes = await curve(stack, (sizes[-1],))
    return {"server": server, "one_process": one_process, "two_processes": two_processes[0]}


def _line(point: dict[str, Any]) -> str:
    return (
        f"{point['open']:>6} sockets open of {point['connections']}: "
        f"last delivery {point['last_delivery_ms']} ms, "
        f"lost {point['lost']}, duplicates {point['duplicates']} "
        f"(publish answered in {point['publish_answered_ms']} ms, delivered "
        f"{point['delivered_reported']} in the publishing process, relayed {point['relayed']})"
        + (f"; connect errors {point['connect_errors']}" if point["connect_errors"] else "")
    )


def report(r: dict[str, Any]) -> str:
    """The curve, one line per size, and the 2-process line."""
    lines = [f"fan-out through the hub ({r['server']}), one server process:"]
    lines += ["  " + _line(p) for p in r["one_process"]]
    lines.append("2 server processes through Redis (half the sockets on each):")
    lines.append("  " + _line(r["two_processes"]))
    return "\n".join(lines)


def budgets(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """One frame to 10,000 sockets of a tenant in one process: last delivery < 1 s and
    none lost; not measured (never PASS) when the run stopped below 10,000."""
    name = "fan-out: 10,000 sockets, one process, last delivery < 1 s, none lost"
    at_size = [p for p in r["one_process"] if p["connections"] >= BUDGET_SOCKETS]
    if not at_size:
        return [(name, NOT_MEASURED, None)]
    p = at_size[0]
    ok = (
        p["open"] >= BUDGET_SOCKETS
        and p["last_delivery_ms"] is not None
        and p["last_delivery_ms"] < BUDGET_MS
        and p["lost"] == 0
        and p["duplicates"] == 0
    )
    return [(name, f"{p['open']} open, {p['last_delivery_ms']} ms, lost {p['lost']}", ok)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server", default=DEFAULT_SERVER)
    args = parser.parse_args()
    result = asyncio.run(measure(args.quick, args.server))
    print(report(result))
    for name, value, ok in budgets(result):
        mark = "PASS" if ok else "----" if value == NOT_MEASURED else "FAIL"
        print(f"[{mark}] {name}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
