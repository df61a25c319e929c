"""Output streams end to end, on the benchmark's own stack (dynalite on disk, daphne
with the in-process worker; ``bench.output`` writes the chunks):

* chunks per second one request streams, handler ``write`` to ``output`` frame on a
  WebSocket, from its first ``output`` frame to its terminal frame (every seq checked
  in order), and how long after the send the acknowledgment and the first chunk came;
* DynamoDB writes per 1,000 small chunks, written in one burst and over about a second
  (one every ms): counted on the server's ``/metrics``
  (``streamer_dynamodb_calls_total``), minus a twin request run the same way that
  writes no chunk (its claim, completion, quota holds and lease renewals);
* replay of an 8 MiB stream (128 chunks of 64 KiB): ``request.status`` with
  ``after_seq`` 0 on a fresh socket, until the frame of the last seq.

    python -m bench.output_stream [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from bench.stack import Stack, local_stack, token
from bench.wsclient import WSClient, open_client

WRITE_OPS = ("PutItem", "UpdateItem", "BatchWriteItem", "DeleteItem")
SMALL_CHUNK = 16  # characters of each small chunk
BIG_CHUNK = 65_534  # 64 KiB as JSON
REPLAY_CHUNKS = 128  # x 64 KiB = 8 MiB, the most one request may write
USER = "output"

#: Budgets (docs/performance.md, "Budgets").
MIN_CHUNKS_PER_S = 5_000
MAX_BURST_WRITES = 4  # one page + one output_seq update, with room for a page split
MAX_PACED_WRITES = 30  # a flush every 0.1 s for about a second, 2 writes each
MAX_REPLAY_S = 2.0


def writes(stack: Stack) -> float:
    """DynamoDB write calls the server (and its in-process worker) made so far."""
    return sum(
        stack.metric("streamer_dynamodb_calls_total", f'operation="{op}"') for op in WRITE_OPS
    )


async def run_request(
    client: WSClient, request_id: str, payload: dict[str, Any], within: float = 120.0
) -> tuple[float, list[dict[str, Any]]]:
    """Send ``bench.output`` and wait for its terminal frame: (the perf_counter time it
    was sent, the request's ``output`` frames and then its terminal frame, each with its
    ``_rx`` time). RuntimeError unless it completed with every seq once, in order."""
    since = len(client.frames)
    sent = await client.send({"id": request_id, "action": "bench.output", "payload": payload})
    end = await client.wait_for(
        lambda f: f.get("request_id") == request_id and f["type"] in ("complete", "error"),
        within=within,
        since=since,
    )
    if end["type"] != "complete":
        raise RuntimeError(f"bench.output failed: {end}")
    outputs = [
        f
        for f in client.frames[since:]
        if f.get("request_id") == request_id and f["type"] == "output"
    ]
    expected = payload["chunks"] if payload.get("write", True) else 0
    if [f["seq"] for f in outputs] != list(range(1, expected + 1)):
        raise RuntimeError(f"{request_id}: output seqs not 1..{expected} in order")
    return sent, [*outputs, end]


async def throughput(stack: Stack, client: WSClient, chunks: int) -> dict[str, Any]:
    """One request streaming ``chunks`` small chunks as fast as its handler writes."""
    payload = {"chunks": chunks, "chunk_bytes": SMALL_CHUNK}
    await run_request(client, "warm-up", {**payload, "chunks": 100})
    since = len(client.frames)
    sent, frames = await run_request(client, "speed", payload)
    ack = next(f for f in client.frames[since:] if f["type"] == "acknowledgment")
    first, end = frames[0]["_rx"], frames[-1]["_rx"]
    return {
        "chunks": chunks,
        "seconds": round(end - sent, 3),
        "ack_ms": round((ack["_rx"] - sent) * 1000, 1),
        "first_chunk_ms": round((first - sent) * 1000, 1),
        # The stream itself: first output frame to the terminal frame.
        "chunks_per_s": round(chunks / (end - first)),
    }


async def writes_per_thousand(
    stack: Stack, client: WSClient, pace_ms: float, repeats: int
) -> dict[str, Any]:
    """Writes of 1,000 chunks (burst: ``pace_ms`` 0), the median of ``repeats`` pairs of
    (with output, the same without)."""
    counts = []
    for i in range(repeats):
        made = {}
        for write in (True, False):
            payload = {"chunks": 1000, "chunk_bytes": SMALL_CHUNK, "pace_ms": pace_ms}
            before = writes(stack)
            await run_request(client, f"w{pace_ms}-{i}-{write}", {**payload, "write": write})
            made[write] = writes(stack) - before
        counts.append(made[True] - made[False])
    return {"pace_ms": pace_ms, "writes": counts, "median": statistics.median(counts)}


async def replay(stack: Stack, client: WSClient) -> dict[str, Any]:
    """Write an 8 MiB stream, then time its replay on another socket."""
    payload = {"chunks": REPLAY_CHUNKS, "chunk_bytes": BIG_CHUNK}
    await run_request(client, "big", payload)
    # A fresh socket of the same user (a request is readable by its own user only).
    async with open_client(f"{stack.ws}/ws?token={token(USER)}") as reader:
        status = {"request_id": "big", "after_seq": 0}
        sent = await reader.send({"id": "replay", "action": "request.status", "payload": status})
        last = await reader.wait_for(
            lambda f: f["type"] == "output" and f.get("seq") == REPLAY_CHUNKS, within=60.0
        )
        seqs = [f["seq"] for f in reader.frames if f["type"] == "output"]
        size = sum(len(f["data"]) for f in reader.frames if f["type"] == "output")
    if seqs != list(range(1, REPLAY_CHUNKS + 1)):
        raise RuntimeError("replay: seqs not 1..128 in order")
    return {"bytes": size, "chunks": len(seqs), "seconds": round(last["_rx"] - sent, 3)}


async def measure(quick: bool) -> dict[str, Any]:
    """Every output-stream number on a fresh stack."""
    chunks = 20_000 if quick else 50_000
    repeats = 1 if quick else 3
    with local_stack() as stack:
        async with open_client(f"{stack.ws}/ws?token={token(USER)}") as client:
            speed = await throughput(stack, client, chunks)
            burst = await writes_per_thousand(stack, client, 0.0, repeats)
            paced = await writes_per_thousand(stack, client, 1.0, repeats)
            replayed = await replay(stack, client)
    return {"quick": quick, "throughput": speed, "burst": burst, "paced": paced, "replay": replayed}


def report(r: dict[str, Any]) -> str:
    """Lines for the benchmark's output."""
    s, b, p, rp = r["throughput"], r["burst"], r["paced"], r["replay"]
    return (
        f"output: {s['chunks']:,} chunks of one request in {s['seconds']} s from the send "
        f"(ack {s['ack_ms']} ms, first chunk {s['first_chunk_ms']} ms; then "
        f"{s['chunks_per_s']:,} chunks/s); "
        f"DynamoDB writes per 1,000 chunks: burst {b['writes']}, over ~1 s {p['writes']}; "
        f"replay of {rp['bytes'] / 2**20:.1f} MiB ({rp['chunks']} chunks): {rp['seconds']} s"
    )


def budgets(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The rows of the budget table."""
    s, b, p, rp = r["throughput"], r["burst"], r["paced"], r["replay"]
    return [
        (
            f"output: chunks/s end to end >= {MIN_CHUNKS_PER_S:,}",
            f"{s['chunks_per_s']:,}/s ({s['chunks']:,} chunks)",
            s["chunks_per_s"] >= MIN_CHUNKS_PER_S,
        ),
        (
            f"output: writes per 1,000 chunks, burst <= {MAX_BURST_WRITES}",
            f"{b['median']:g}",
            b["median"] <= MAX_BURST_WRITES,
        ),
        (
            f"output: writes per 1,000 chunks, over 1 s <= {MAX_PACED_WRITES}",
            f"{p['median']:g}",
            p["median"] <= MAX_PACED_WRITES,
        ),
        (
            f"output: replay of 8 MiB < {MAX_REPLAY_S:g} s",
            f"{rp['seconds']:.2f} s",
            rp["seconds"] < MAX_REPLAY_S,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    result = asyncio.run(measure(parser.parse_args().quick))
    print(report(result))
    for name, value, ok in budgets(result):
        print(f"[{'PASS' if ok else 'FAIL'}] {name:48} {value}")


if __name__ == "__main__":
    main()
