"""Reconnect storms (issue 13, item 3): after a deploy every client reconnects at once.

    python -m bench.storm                   # 5,000 clients (the budget's size)
    python -m bench.storm --quick           # 1,000 clients
    python -m bench.storm --clients 2000 --procs 4

``--clients`` clients, each with its own user's token, connect at the same moment from
``--procs`` client processes (spawned, so the clients' CPU is not the measuring
process's) and hold their sockets. A client counts as accepted when its socket answers
an ``echo`` frame: a refused handshake is accepted and closed at once with its close
code (docs/protocol.md §1), so only the echo tells the two apart. Reported: time from the
start signal until the last client was accepted, connects/s, failures by close code, the
server's, dynalite's and the client processes' CPU seconds over the storm (where the time
goes) and the DynamoDB calls per connect (the server's ``streamer_dynamodb_calls_total``, like
``bench/__main__.py dynamodb_calls``). The same storm against the bare Channels echo
consumer (``/bench/echo``) on the same server is the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import queue
import resource
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from bench.probes import calls, diff, writes
from bench.stack import Stack, local_stack, token
from streaming.management.commands.serve import DEFAULT_SERVER

BUDGET_CLIENTS = 5000
BUDGET_S = 10.0
QUICK_CLIENTS = 1000
CLIENT_PROCS = 4
WRITE_BUDGET = 1.0  # DynamoDB writes per accepted connect (batched writes per connection)
OPEN_TIMEOUT_S = 60.0
ECHO = '{"action":"echo","payload":{}}'


# --- the client processes ----------------------------------------------------------------


def _raise_nofile() -> None:
    """Lift the soft limit of open files to the hard one (a few thousand sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _one(url: str) -> tuple[str, float, ClientConnection | None]:
    """Connect and echo once: ("accepted", when, socket) or (close code or error, when, None)."""
    try:
        ws = await connect(
            url, open_timeout=OPEN_TIMEOUT_S, ping_interval=None, compression=None, max_size=None
        )
    except InvalidStatus as exc:
        return f"http {exc.response.status_code}", time.time(), None
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        return type(exc).__name__, time.time(), None
    try:
        await ws.send(ECHO)
        await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S)
    except ConnectionClosed:
        return str(ws.close_code), time.time(), None
    except TimeoutError:
        await ws.close()
        return "no echo", time.time(), None
    return "accepted", time.time(), ws


async def _storm(
    urls: list[str],
    go: multiprocessing.synchronize.Event,
    release: multiprocessing.synchronize.Event,
    out: multiprocessing.queues.Queue[Any],
) -> None:
    loop = asyncio.get_running_loop()
    out.put("ready")
    await loop.run_in_executor(None, go.wait)
    cpu_before = time.process_time()
    outcomes = await asyncio.gather(*(_one(url) for url in urls))
    held = [ws for _, _, ws in outcomes if ws is not None]
    out.put(
        {
            "accepted_at": [at for kind, at, _ in outcomes if kind == "accepted"],
            "failures": dict(collections.Counter(k for k, _, _ in outcomes if k != "accepted")),
            "cpu_s": time.process_time() - cpu_before,
        }
    )
    await loop.run_in_executor(None, release.wait)  # hold until the parent has measured
    await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)


def _client_process(
    urls: list[str],
    go: multiprocessing.synchronize.Event,
    release: multiprocessing.synchronize.Event,
    out: multiprocessing.queues.Queue[Any],
) -> None:
    _raise_nofile()
    asyncio.run(_storm(urls, go, release, out))


# --- one storm ---------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def storm(stack: Stack, urls: list[str], procs: int) -> dict[str, Any]:
    """Every url connected at once from ``procs`` client processes; the numbers."""
    ctx = multiprocessing.get_context("spawn")
    go, release, out = ctx.Event(), ctx.Event(), ctx.Queue()
    children = [
        ctx.Process(target=_client_process, args=(urls[i::procs], go, release, out), daemon=True)
        for i in range(procs)
    ]
    for child in children:
        child.start()
    loop = asyncio.get_running_loop()
    try:
        for _ in children:
            assert await loop.run_in_executor(None, out.get, True, 120) == "ready"
        server, dynalite = stack.procs["server"].pid, _dynalite_pid(stack)
        cpu_before = (cpu_s(server), cpu_s(dynalite))
        calls_before = await _calls(stack)
        started = time.time()
        go.set()
        parts = [await _result(out, children) for _ in children]
        cpu_after = (cpu_s(server), cpu_s(dynalite))
        calls_during = diff(await _calls(stack), calls_before)
        held_rss_mib = round(stack.rss_kib("server") / 1024, 1)
    finally:
        release.set()
        for child in children:
            await loop.run_in_executor(None, child.join, 60)
            if child.is_alive():
                child.kill()
    accepted_at = sorted(at for part in parts for at in part["accepted_at"])
    failures: collections.Counter[str] = collections.Counter()
    for part in parts:
        failures.update(part["failures"])
    accepted = len(accepted_at)
    all_s = (accepted_at[-1] - started) if accepted else 0.0
    return {
        "clients": len(urls),
        "client_procs": procs,
        "accepted": accepted,
        "failures": dict(failures),
        "all_accepted_s": round(all_s, 3),
        "half_accepted_s": round(accepted_at[accepted // 2] - started, 3) if accepted else None,
        "accepted_by_second": [
            sum(1 for at in accepted_at if at - started < s + 1) for s in range(int(all_s) + 1)
        ],
        "connects_per_s": round(accepted / all_s, 1) if all_s else 0.0,
        "server_cpu_s": round(cpu_after[0] - cpu_before[0], 2),
        "dynalite_cpu_s": round(cpu_after[1] - cpu_before[1], 2),
        "clients_cpu_s": round(sum(part["cpu_s"] for part in parts), 2),
        "server_rss_mib_held": held_rss_mib,
        "dynamodb_calls_per_connect": {
            op: round(n / max(1, accepted), 3) for op, n in sorted(calls_during.items())
        },
        "writes_per_connect": round(writes(calls_during) / max(1, accepted), 3),
    }


async def _result(out: multiprocessing.queues.Queue[Any], children: list[Any]) -> Any:
    """The next report of a client process; RuntimeError when one died without it."""
    loop = asyncio.get_running_loop()
    while True:
        with contextlib.suppress(queue.Empty):
            return await loop.run_in_executor(None, out.get, True, 1.0)
        if any(child.exitcode not in (None, 0) for child in children):
            raise RuntimeError("a client process died: see its traceback above")


async def _calls(stack: Stack) -> dict[str, float]:
    """The server's DynamoDB call counters; asked again while a busy server (still
    closing the refused sockets of a storm) lets ``/metrics`` time out."""
    for _ in range(12):
        with contextlib.suppress(TimeoutError, OSError):
            return await asyncio.to_thread(calls, stack)
    raise RuntimeError("the server's /metrics did not answer")


def _dynalite_pid(stack: Stack) -> int:
    dynalite = stack.e2e.dynalite
    assert dynalite is not None and dynalite.proc is not None
    return dynalite.proc.pid


async def _drained(stack: Stack, deletes_expected: float, before: float) -> None:
    """Wait until the server removed the storm's records (one DeleteItem per socket),
    so that the next measurement does not share the machine with those writes."""
    for _ in range(1200):
        done = stack.metric("streamer_dynamodb_calls_total", 'operation="DeleteItem"') - before
        if done >= deletes_expected:
            return
        await asyncio.sleep(0.1)


async def measure(
    quick: bool,
    *,
    clients: int | None = None,
    procs: int = CLIENT_PROCS,
    server: str = DEFAULT_SERVER,
) -> dict[str, Any]:
    """The bare consumer's storm, then the full stack's, on one fresh ``server``."""
    n = clients or (QUICK_CLIENTS if quick else BUDGET_CLIENTS)
    _raise_nofile()  # inherited by the server the stack starts
    with local_stack(server=server) as stack:
        bare = await storm(stack, [f"{stack.ws}/bench/echo"] * n, procs)
        await asyncio.sleep(1)
        urls = [f"{stack.ws}/ws?token={token(f'storm{i}')}" for i in range(n)]
        deletes = stack.metric("streamer_dynamodb_calls_total", 'operation="DeleteItem"')
        full = await storm(stack, urls, procs)
        await _drained(stack, full["accepted"], deletes)
    return {"quick": quick, "clients": n, "server": server, "bare": bare, "full": full}


def report(r: dict[str, Any]) -> str:
    """Lines for the benchmark's table."""
    lines = [f"reconnect storm: {r['clients']} clients connecting at once ({r['server']})"]
    for name, key in (("bare Channels consumer", "bare"), ("full stack", "full")):
        s = r[key]
        lines.append(
            f"  {name:24} {s['accepted']}/{s['clients']} accepted in {s['all_accepted_s']} s "
            f"(half in {s['half_accepted_s']} s), {s['connects_per_s']} connects/s, "
            f"failures {s['failures'] or 'none'}; CPU s: server {s['server_cpu_s']}, "
            f"dynalite {s['dynalite_cpu_s']}, clients {s['clients_cpu_s']}; "
            f"server RSS held {s['server_rss_mib_held']} MiB"
        )
    full = r["full"]
    lines.append(
        f"  DynamoDB calls per connect: {full['dynamodb_calls_per_connect']} "
        f"({full['writes_per_connect']} writes)"
    )
    return "\n".join(lines)


def budgets(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The storm's rows: 5,000 accepted in under 10 s (only a run at that size can pass
    it), and at most one write per connect."""
    full = r["full"]
    name = f"storm: {BUDGET_CLIENTS:,} connects all accepted < {BUDGET_S:g} s"
    if full["clients"] < BUDGET_CLIENTS:
        timed = (name, f"not measured in the quick run ({full['clients']} clients)", None)
    else:
        ok = full["accepted"] == full["clients"] and full["all_accepted_s"] < BUDGET_S
        timed = (
            name,
            f"{full['accepted']} in {full['all_accepted_s']} s, {full['connects_per_s']}/s "
            f"(bare {r['bare']['connects_per_s']}/s)",
            ok,
        )
    per = full["writes_per_connect"]
    return [timed, ("storm: ≤ 1 write per connect", f"{per}", per <= WRITE_BUDGET)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--procs", type=int, default=CLIENT_PROCS)
    parser.add_argument("--server", default=DEFAULT_SERVER, help="ASGI server of manage.py serve")
    args = parser.parse_args()
    result = asyncio.run(
        measure(args.quick, clients=args.clients, procs=args.procs, server=args.server)
    )
    print(report(result))
    for name, value, ok in budgets(result):
        print(f"[{'PASS' if ok else 'FAIL'}] {name:44} {value}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
