"""The ASGI servers side by side (issue 13, item 1): daphne, uvicorn and granian, each
serving the full stack and the bare Channels echo consumer (``/bench/echo``), one after
the other on the same machine, with a raw ``websockets`` echo server as the floor.

    python -m bench.servers            # full run
    python -m bench.servers --quick    # smaller counts

Per server: echo p50/p90 (bare consumer and full stack), sequential connects/s (connect,
one echo, close; bare consumer), concurrent connects/s (20 in flight; bare and full
stack), one frame fanned out to 1,000 sockets of a tenant, memory per idle full-stack
socket, and backpressure: three sockets that never read while they flood themselves
with echo frames must each be closed with 4408 while the server's memory stays bounded
(what streaming/outbox.py needs from ``websocket.send``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
from typing import Any

from bench import slow_consumers
from bench.probes import (
    ECHO_MSG,
    connect_rate,
    fan_out,
    idle_connections,
    raw_floor,
    round_trips,
    sequential_connect_echo_rate,
    summary,
)
from bench.stack import local_stack, token

SERVERS = ("daphne", "uvicorn", "granian")
#: RSS growth under the three-sink flood that still counts as bounded (the e2e test's).
BOUNDED_GROWTH_MIB = 40


async def measure_server(server: str, quick: bool) -> dict[str, Any]:
    """Every figure of one server, on a stack of its own."""
    n_echo = 500 if quick else 2000
    n_conn = 200 if quick else 1000
    with local_stack(server=server) as stack:
        bare = f"{stack.ws}/bench/echo"
        out: dict[str, Any] = {"idle": await idle_connections(stack, 500 if quick else 2000)}
        out["echo_bare_ms"] = summary(await round_trips(bare, n_echo, ECHO_MSG))
        out["echo_full_ms"] = summary(
            await round_trips(f"{stack.ws}/ws?token={token('echo')}", n_echo, ECHO_MSG)
        )
        out["sequential_connects_per_s"] = round(
            await sequential_connect_echo_rate(lambda i: bare, 100 if quick else 500), 1
        )
        out["concurrent_connects_per_s_bare"] = round(await connect_rate(lambda i: bare, n_conn), 1)
        out["concurrent_connects_per_s_full"] = round(
            await connect_rate(lambda i: f"{stack.ws}/ws?token={token(f'c{i}')}", n_conn), 1
        )
        out["fan_out"] = await fan_out(stack, 1000)
        server_proc = stack.servers[0]
        out["backpressure"] = await slow_consumers.flood(
            pid=server_proc.proc.pid,
            base_url=server_proc.url,
            sink_urls=[server_proc.ws_url(token(f"sink{i}")) for i in range(3)],
            echo_url=server_proc.ws_url(token("polite")),
            frame_bytes=60_000,
            max_s=20.0 if quick else 40.0,
            echo_n=20,
        )
    return out


async def measure(quick: bool) -> dict[str, Any]:
    """All servers, then the raw floor."""
    servers = {name: await measure_server(name, quick) for name in SERVERS}
    floor = summary(await raw_floor(500 if quick else 2000, ECHO_MSG))
    return {"quick": quick, "servers": servers, "raw_websockets_echo_ms": floor}


def holds_4408(b: dict[str, Any]) -> bool:
    """Every never-reading socket was closed 4408 with bounded memory."""
    return b["closed_4408"] == b["sockets"] and b["rss_growth_mib"] <= BOUNDED_GROWTH_MIB


def rows(r: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The comparison as (figure, one cell per server) rows."""
    s = r["servers"]

    def each(cell: Any) -> list[str]:
        return [cell(s[name]) for name in s]

    return [
        ("echo p50 / p90, bare consumer (ms)", each(lambda x: _p(x["echo_bare_ms"]))),
        ("echo p50 / p90, full stack (ms)", each(lambda x: _p(x["echo_full_ms"]))),
        ("sequential connect + echo /s, bare", each(lambda x: f"{x['sequential_connects_per_s']}")),
        (
            "concurrent connects/s, bare",
            each(lambda x: f"{x['concurrent_connects_per_s_bare']}"),
        ),
        (
            "concurrent connects/s, full stack",
            each(lambda x: f"{x['concurrent_connects_per_s_full']}"),
        ),
        (
            "fan-out 1 frame → 1,000: last (ms), lost",
            each(lambda x: f"{x['fan_out']['last_delivery_ms']}, {x['fan_out']['lost']}"),
        ),
        (
            "idle full-stack socket (KiB), n held",
            each(lambda x: f"{x['idle']['kib_per_connection']}, {x['idle']['held']}"),
        ),
        (
            "3 never-reading sockets: 4408, RSS growth",
            each(
                lambda x: (
                    f"{x['backpressure']['closed_4408']}/3, "
                    f"+{x['backpressure']['rss_growth_mib']} MiB"
                )
            ),
        ),
    ]


def _p(s: dict[str, float]) -> str:
    return f"{s['p50']:.3f} / {s['p90']:.3f}"


def report(r: dict[str, Any]) -> str:
    """The comparison as a Markdown table (as docs/performance.md shows it)."""
    names = list(r["servers"])
    lines = [
        "| figure | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *(f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows(r)),
    ]
    floor = r["raw_websockets_echo_ms"]
    lines.append(f"\nraw `websockets` echo server (floor): p50 / p90 {_p(floor)} ms")
    return "\n".join(lines)


def budgets(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Each server must keep the output limit (4408) with bounded memory."""
    return [
        (
            f"{name}: slow consumers closed 4408, memory bounded",
            f"{x['backpressure']['closed_4408']}/3, +{x['backpressure']['rss_growth_mib']} MiB",
            holds_4408(x["backpressure"]),
        )
        for name, x in r["servers"].items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = asyncio.run(measure(args.quick))
    print(report(result))
    for name, value, ok in budgets(result):
        print(f"  [{'PASS' if ok else 'FAIL'}] {name:50} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
