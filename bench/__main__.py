"""Run every measurement of docs/performance.md side by side and print one table.

    python -m bench            # full run (< 10 minutes)
    python -m bench --quick    # smaller counts (< 3 minutes); QUICK=1 does the same

Everything runs on 127.0.0.1: an embedded DynamoDB (dynalite, on disk), ``manage.py
serve`` (its default server) with the in-process worker and, beside it, daphne for the
stock stack's bare consumer; a raw ``websockets`` echo server (the floor); for the Redis
rows, redis-server with a separate worker. The quick run marks a budget PASS or FAIL only
when it measured it at the budget's size.
Results go to bench/results/latest.json; with matplotlib installed, a latency plot to
docs/performance-latency.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from bench import fairness, fanout, output_stream, slow_consumers, storm
from bench.probes import (
    calls,
    connect_rate,
    diff,
    echo_rounds,
    fan_out,
    idle_curve,
    raw_echo_server,
    summary,
    writes,
)
from bench.stack import ROOT, Stack, connect, local_stack, token
from streaming.management.commands.serve import DEFAULT_SERVER


# -- async requests -------------------------------------------------------------------------
async def async_latencies(stack: Stack, n: int, user: str) -> tuple[list[float], list[float]]:
    ws = await connect(f"{stack.ws}/ws?token={token(user)}")
    acks, completes = [], []
    try:
        for i in range(n + 10):
            t = time.perf_counter()
            await ws.send(orjson.dumps({"id": f"{user}-{i}", "action": "bench.noop"}).decode())
            ack = None
            while True:
                frame = orjson.loads(await ws.recv())
                if frame["type"] == "acknowledgment":
                    ack = (time.perf_counter() - t) * 1000
                elif frame["type"] in ("complete", "error"):
                    assert frame["type"] == "complete", frame
                    break
            if i >= 10:  # the first ten warm up
                acks.append(ack or 0.0)
                completes.append((time.perf_counter() - t) * 1000)
    finally:
        await ws.close()
    return acks, completes


# -- progress flood ----------------------------------------------------------------------------
async def progress_flood(stack: Stack, reports: int, sustain_s: float) -> dict[str, Any]:
    """100,000 reports in a tight loop (CPU cost), then a sustained flood for
    ``sustain_s`` seconds (frames/s and writes/s the client and DynamoDB see)."""
    writes_before = stack.metric("streamer_dynamodb_calls_total", 'operation="UpdateItem"')
    ws = await connect(f"{stack.ws}/ws?token={token('flood')}")
    stamps: list[float] = []
    result = None
    t = time.perf_counter()
    payload = {"reports": reports, "sustain_s": sustain_s}
    await ws.send(
        orjson.dumps({"id": "flood", "action": "bench.flood", "payload": payload}).decode()
    )
    while True:
        frame = orjson.loads(await ws.recv())
        if frame["type"] == "progress":
            stamps.append(time.perf_counter())
        elif frame["type"] == "complete":
            result = frame["result"]
            break
        elif frame["type"] == "error":
            raise RuntimeError(frame)
    end = time.perf_counter()
    await ws.close()
    writes = stack.metric("streamer_dynamodb_calls_total", 'operation="UpdateItem"') - writes_before
    # Every other UpdateItem of one async request: the claim, the completion, the two
    # quota holds taken at enqueue and the two given back (tenant, user), and one lease
    # renewal per third of the lease while it runs.
    lease_s = float(os.environ.get("STREAMER_LEASE_S", "30"))
    renewals = int((time.perf_counter() - t) // (lease_s / 3))
    progress_writes = int(writes) - 6 - renewals
    # The steady rate: frames per second over the whole run, and the most frames seen
    # in any one-second window.
    busiest = max(sum(1 for s in stamps if a <= s < a + 1.0) for a in stamps) if stamps else 0
    return {
        "reports": reports,
        "sustained_reports": result["sustained_reports"],
        "run_s": round(end - t, 3),
        "progress_frames": len(stamps),
        "frames_per_s": round(len(stamps) / (end - t), 2),
        "max_frames_in_1s": busiest,
        "handler_cpu_s": result["handler_cpu_s"],
        "cpu_us_per_report": round(result["handler_cpu_s"] / reports * 1e6, 3),
        "progress_writes": progress_writes,
        "writes_per_s": round(progress_writes / (end - t), 2),
    }


# -- DynamoDB calls per operation -------------------------------------------------------------
async def dynamodb_calls(stack: Stack) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    b = calls(stack)
    ws = await connect(f"{stack.ws}/ws?token={token('calls')}")
    out["connect"] = diff(calls(stack), b)
    b = calls(stack)
    for _ in range(100):
        await ws.send('{"action": "echo", "payload": {}}')
        await ws.recv()
    out["echo (per 100)"] = diff(calls(stack), b)
    b = calls(stack)
    await ws.send('{"id": "c1", "action": "bench.noop"}')
    frame = orjson.loads(await ws.recv())
    assert frame["type"] == "acknowledgment"
    while orjson.loads(await ws.recv())["type"] != "complete":
        pass
    out["async request (enqueue → complete)"] = diff(calls(stack), b)
    b = calls(stack)
    await ws.close()
    await asyncio.sleep(0.5)
    out["disconnect"] = diff(calls(stack), b)
    return out


# -- the run ----------------------------------------------------------------------------------
#: Benchmark sections: modules with ``async measure(quick) -> dict``, ``report(r) -> str``
#: and ``budgets(r) -> [(name, value, ok)]`` (``ok`` None: not measured at the budget's
#: size). Each runs on stacks of its own after the core measurements.
#: Sections measured after the ones above, each a module with measure/report/budgets.
SECTIONS: tuple[ModuleType, ...] = (fanout, storm, output_stream)
IDLE_LEVELS = {True: [500, 1000, 2000], False: [1000, 2500, 5000, 10_000]}
IDLE_BUDGET = 5000
SLOW_CONSUMER_SOCKETS = {True: 30, False: 100}


async def run(quick: bool) -> dict[str, Any]:
    n_echo = 500 if quick else 2000
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
        "quick": quick,
        "server": DEFAULT_SERVER,
    }
    with local_stack() as stack:
        # First, while the server process is fresh, so its memory growth is the sockets'.
        curve = await idle_curve(stack, IDLE_LEVELS[quick])
        results["idle_curve"] = curve
        results["idle"] = next((p for p in curve if p["held"] >= IDLE_BUDGET), curve[-1])
        # The stock server beside ours, on the same storage, for its bare consumer.
        daphne = stack.start_server(False, server="daphne")
        daphne_ws = daphne.url.replace("http://", "ws://", 1)
        async with raw_echo_server() as raw:
            series = await echo_rounds(
                {
                    "raw websockets floor": raw,
                    "bare Channels consumer, daphne": f"{daphne_ws}/bench/echo",
                    f"bare Channels consumer, {DEFAULT_SERVER}": f"{stack.ws}/bench/echo",
                    "full stack echo": f"{stack.ws}/ws?token={token('echo')}",
                },
                n_echo,
            )
        results["echo_ms"] = {name: summary(values) for name, values in series.items()}
        n_conn = 200 if quick else 1000
        results["connects_per_s"] = {
            "bare Channels accept": round(
                await connect_rate(lambda i: f"{stack.ws}/bench/echo", n_conn), 1
            ),
            "full stack (JWT + tenant + register)": round(
                await connect_rate(lambda i: f"{stack.ws}/ws?token={token(f'c{i}')}", n_conn), 1
            ),
        }
        results["dynamodb_calls"] = await dynamodb_calls(stack)
        acks, completes = await async_latencies(stack, 100 if quick else 500, "noop")
        results["async_in_process_ms"] = {
            "acknowledgment": summary(acks),
            "complete": summary(completes),
        }
        results["progress_flood"] = await progress_flood(stack, 100_000, 3.0 if quick else 10.0)
        results["fan_out"] = await fan_out(stack, 1000)
        latencies = {
            "bare Channels echo, daphne": series["bare Channels consumer, daphne"],
            "full stack echo": series["full stack echo"],
            "async complete (in-process worker)": completes,
        }
    with local_stack(redis=True, workers=1) as stack:
        acks, completes = await async_latencies(stack, 100 if quick else 300, "redis")
        results["async_redis_ms"] = {
            "acknowledgment": summary(acks),
            "complete": summary(completes),
        }
        latencies["async complete (Redis + worker process)"] = completes
    results["fairness"] = await fairness.measure(probes=3 if quick else 5)
    results["latencies"] = latencies
    results["slow_consumers"] = await slow_consumers.run(
        DEFAULT_SERVER, SLOW_CONSUMER_SOCKETS[quick], False
    )
    results["sections"] = {m.__name__: await m.measure(quick) for m in SECTIONS}
    return results


Verdict = tuple[str, str, bool | None]


def budgets(r: dict[str, Any]) -> list[Verdict]:
    """The first-round budgets, then the 1.1 ones (docs/performance.md), each as (name,
    measured value, PASS/FAIL, or None when the run did not measure it at its size)."""
    return [*first_round_budgets(r), *budgets_1_1(r)]


def first_round_budgets(r: dict[str, Any]) -> list[Verdict]:
    echo = r["echo_ms"]
    ratio = echo["full stack echo"]["p50"] / echo[f"bare Channels consumer, {r['server']}"]["p50"]
    calls_ = r["dynamodb_calls"]
    flood = r["progress_flood"]
    held = r["idle"]["held"]
    return [
        (f"echo p50 ≤ 1.3× bare Channels ({r['server']})", f"{ratio:.2f}×", ratio <= 1.3),
        (
            "ack p50 < 15 ms",
            f"{r['async_in_process_ms']['acknowledgment']['p50']:.2f} ms",
            r["async_in_process_ms"]["acknowledgment"]["p50"] < 15,
        ),
        (
            "complete p50 < 40 ms",
            f"{r['async_in_process_ms']['complete']['p50']:.2f} ms",
            r["async_in_process_ms"]["complete"]["p50"] < 40,
        ),
        (
            "no DynamoDB call on echo",
            str(sum(calls_["echo (per 100)"].values())),
            not calls_["echo (per 100)"],
        ),
        ("≤ 1 write per connect", str(writes(calls_["connect"])), writes(calls_["connect"]) <= 1),
        (
            "≤ 1 write per disconnect",
            str(writes(calls_["disconnect"])),
            writes(calls_["disconnect"]) <= 1,
        ),
        (
            "progress ≤ 1 write/s",
            f"{flood['progress_writes']} in {flood['run_s']} s",
            flood["progress_writes"] <= flood["run_s"] + 1,
        ),
        (
            "progress ≤ 10 frames/s to client",
            f"{flood['frames_per_s']}/s (max {flood['max_frames_in_1s']} in 1 s)",
            flood["max_frames_in_1s"] <= 11,
        ),
        ("fan-out: no frame lost", str(r["fan_out"]["lost"]), r["fan_out"]["lost"] == 0),
        (
            f"{IDLE_BUDGET:,} idle connections held",
            f"{held} of {r['idle']['held'] + r['idle']['failed']}",
            sized(held >= IDLE_BUDGET, max(p["held"] for p in r["idle_curve"]) >= IDLE_BUDGET),
        ),
    ]


def budgets_1_1(r: dict[str, Any]) -> list[Verdict]:
    """SYSTEM.md "1.1 budgets", each beside its baseline of the same run."""
    echo = r["echo_ms"]
    full = echo["full stack echo"]["p50"]
    daphne = full / echo["bare Channels consumer, daphne"]["p50"]
    raw = full / echo["raw websockets floor"]["p50"]
    slow = r["slow_consumers"]
    slow_at_size = slow["sockets"] >= SLOW_CONSUMER_SOCKETS[False]
    rows: list[Verdict] = [
        ("1.1 echo p50 ≤ 1.0× bare Channels on daphne", f"{daphne:.2f}×", daphne <= 1.0),
        ("1.1 echo p50 ≤ 2.0× raw websockets", f"{raw:.2f}×", raw <= 2.0),
    ]
    for module in SECTIONS:
        rows += module.budgets(r["sections"][module.__name__])
    rows += [
        (f"1.1 {name}", value, sized(ok, slow_at_size))
        for name, value, ok in slow_consumers.verdict(slow)
    ]
    rows.append(fairness.budget(r["fairness"]))
    return rows


def sized(ok: bool, at_budget_size: bool) -> bool | None:
    """PASS/FAIL only for a measurement made at the budget's size (None otherwise)."""
    return ok if at_budget_size else None


def mark(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: " -- "}[ok]


def shown(value: str, ok: bool | None, quick: bool) -> str:
    if ok is None and quick and not value.startswith("not measured"):
        return f"{value} (not measured in the quick run)"
    return value


def table(r: dict[str, Any]) -> str:
    lines = [
        "",
        "Streamer benchmark — "
        + ("quick" if r["quick"] else "full")
        + f" run, {r['machine']['cpus']} CPUs",
        "",
    ]
    lines.append(f"{'echo round trip (ms)':44} {'p50':>8} {'p90':>8} {'p99':>8} {'n':>6}")
    for name, s in r["echo_ms"].items():
        lines.append(f"  {name:42} {s['p50']:8.3f} {s['p90']:8.3f} {s['p99']:8.3f} {s['n']:6}")
    for title, key in (
        ("async, in-process worker (ms)", "async_in_process_ms"),
        ("async, Redis + worker process (ms)", "async_redis_ms"),
    ):
        lines.append(f"{title:44} {'p50':>8} {'p90':>8} {'p99':>8} {'n':>6}")
        for name, s in r[key].items():
            lines.append(f"  {name:42} {s['p50']:8.3f} {s['p90']:8.3f} {s['p99']:8.3f} {s['n']:6}")
    lines.append("connects per second")
    for name, v in r["connects_per_s"].items():
        lines.append(f"  {name:42} {v:8.1f}")
    lines.append("DynamoDB calls (counted by a botocore hook in the server)")
    for name, ops in r["dynamodb_calls"].items():
        lines.append(f"  {name:42} {json.dumps(ops) if ops else 'none'}")
    i = r["idle"]
    lines.append(
        f"idle connections: {i['held']} held ({i['failed']} failed), {i['kib_per_connection']} KiB each "
        f"(RSS {i['rss_before_mib']} → {i['rss_after_mib']} MiB), echo p50 while held {i['echo_p50_ms_while_held']} ms"
    )
    lines.append(
        f"idle connections curve ({r['server']}){'held':>17} {'KiB each':>9} {'echo p50 ms':>12}"
    )
    for point in r["idle_curve"]:
        lines.append(
            f"  {'':40} {point['held']:6} {point['kib_per_connection']:9} "
            f"{point['echo_p50_ms_while_held']:12.3f}"
        )
    f = r["fan_out"]
    lines.append(
        f"fan-out: 1 frame → {f['connections']} connections: last delivery {f['last_delivery_ms']} ms, lost {f['lost']}"
    )
    p = r["progress_flood"]
    lines.append(
        f"progress flood: {p['reports']:,} reports in a tight loop: handler CPU {p['handler_cpu_s']} s "
        f"({p['cpu_us_per_report']} µs/report); then {p['sustained_reports']:,} more over the run of {p['run_s']} s"
    )
    lines.append(
        f"  → {p['progress_frames']} progress frames ({p['frames_per_s']}/s, at most {p['max_frames_in_1s']} in any 1 s), "
        f"{p['progress_writes']} DynamoDB progress writes ({p['writes_per_s']}/s)"
    )
    lines.append(fairness.report(r["fairness"]))
    lines += [module.report(r["sections"][module.__name__]) for module in SECTIONS]
    lines.append("")
    lines.append("budgets (docs/performance.md)")
    for name, value, ok in budgets(r):
        lines.append(f"  [{mark(ok)}] {name:48} {shown(value, ok, r['quick'])}")
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax, curve) = plt.subplots(1, 2, figsize=(13, 4.5), width_ratios=(3, 2))
    for name, values in r["latencies"].items():
        ordered = sorted(values)
        ax.plot(ordered, [i / len(ordered) for i in range(len(ordered))], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Streamer latency CDF (loopback, " + ("quick" if r["quick"] else "full") + " run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    held = [p["held"] for p in r["idle_curve"]]
    curve.plot(held, [p["kib_per_connection"] for p in r["idle_curve"]], "o-", color="tab:blue")
    curve.set_xlabel(f"idle sockets held by one {r['server']} process")
    curve.set_ylabel("server memory per socket (KiB)", color="tab:blue")
    curve.set_ylim(bottom=0)
    echo = curve.twinx()
    echo.plot(held, [p["echo_p50_ms_while_held"] for p in r["idle_curve"]], "s--", color="tab:red")
    echo.set_ylabel("echo p50 while held (ms)", color="tab:red")
    echo.set_ylim(bottom=0)
    curve.set_title("Idle connections")
    curve.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", default=os.environ.get("QUICK") == "1")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "performance-latency.png"))
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    results = asyncio.run(run(args.quick))
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    print(table(results))
    print(f"\nelapsed {results['elapsed_s']} s")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    payload = {k: v for k, v in results.items() if k != "latencies"}
    payload["budgets"] = [{"budget": n, "value": v, "ok": ok} for n, v, ok in budgets(results)]
    for name in (f"{stamp}.json", "latest.json"):
        (out / name).write_text(json.dumps(payload, indent=2))
    if plot(results, Path(args.plot)):
        print(f"plot: {args.plot}")
    print(f"json: {out / 'latest.json'}")
    _ = statistics  # keep the import for readers extending the summaries


if __name__ == "__main__":
    main()
