"""Output streams against the embedded DynamoDB (dynalite, on disk):

* DynamoDB writes per 1,000 small chunks (a burst, and written over ~1 s by a handler);
* chunks per second one request streams, handler ``write`` to ``output`` frame on a
  subscriber's channel (a real worker, the in-memory channel layer; no socket);
* replay time of an 8 MiB stream (every stored chunk read back in order and encoded as
  frames, what ``request.status`` ``after_seq=0`` does).

    python -m bench.output_stream [--chunks 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streaming.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")  # a local measurement: the development key will do

import django

django.setup()

from channels.layers import InMemoryChannelLayer, channel_layers  # noqa: E402

from bench.store_ops import total_calls  # noqa: E402
from protocol import codec, frames  # noqa: E402
from storage import base, localserver, tables  # noqa: E402
from storage.requests.model import RequestKey  # noqa: E402
from storage.requests.output import MAX_CHUNK_BYTES, encode_chunk, output_store  # noqa: E402
from storage.requests.store import request_store  # noqa: E402
from streaming.actions.registry import ActionRegistry, action  # noqa: E402
from streaming.lifecycle import wake_worker  # noqa: E402
from streaming.output import OutputWriter  # noqa: E402
from streaming.worker import Worker  # noqa: E402


def enqueue(request_id: str, action_name: str = "bench.out", **origin: Any) -> RequestKey:
    record = request_store.enqueue(
        tenant_id="bench",
        user_id="u",
        request_id=request_id,
        action=action_name,
        payload={},
        shards=1,
        **origin,
    )
    return record.key


def writes_per_thousand_burst() -> float:
    key = enqueue("burst")
    before = total_calls()
    output_store.append(key, 1, [encode_chunk(f"line {i}") for i in range(1000)])
    return total_calls() - before


async def writes_per_thousand_paced() -> float:
    """1,000 chunks written one per ms (about a second) by a handler."""
    key = enqueue("paced")

    async def nowhere(_chunks: list[tuple[int, Any]]) -> None:
        return None

    writer = OutputWriter(asyncio.get_running_loop(), key, nowhere)
    before = total_calls()
    for i in range(1000):
        writer.write(f"line {i}")
        await asyncio.sleep(0.001)
    await writer.close()
    return total_calls() - before - 1  # minus the one read of where the stream stands


async def chunks_per_second(count: int) -> tuple[float, int]:
    """Handler writes ``count`` chunks as fast as it can; the clock stops when the
    subscriber's channel has the terminal frame. Returns (chunks/s, frames seen)."""
    layer = InMemoryChannelLayer(capacity=100_000, expiry=60)
    channel_layers.set("default", layer)
    actions = ActionRegistry()

    @action("bench.out", mode="async", registry=actions)
    async def out(job: Any, payload: Any) -> int:
        for i in range(count):
            job.write(f"line {i}")
            if i % 1000 == 0:
                await asyncio.sleep(0)
        return count

    channel = await layer.new_channel("bench.")
    worker = Worker(actions=actions, shards=1, poll_interval_s=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    started = time.perf_counter()
    key = await asyncio.to_thread(
        enqueue,
        "speed",
        connection_id="bench-conn",
        origin_transport="channels",
        origin_address=channel,
    )
    await wake_worker(key.as_string())
    outputs = 0
    while True:
        message = await layer.receive(channel)
        batch = message["frames"] if message["type"] == "streamer.frames" else [message]
        outputs += sum(1 for m in batch if m.get("frame_type") == "output")
        if any(m.get("frame_type") in ("complete", "error") for m in batch):
            break
    elapsed = time.perf_counter() - started
    stop.set()
    await running
    return count / elapsed, outputs


def replay_seconds() -> tuple[float, int]:
    """An 8 MiB stream (128 chunks of 64 KiB) read back and encoded as frames."""
    key = enqueue("replay")
    chunk = encode_chunk("x" * (MAX_CHUNK_BYTES - 2))
    output_store.append(key, 1, [chunk] * 128)
    started = time.perf_counter()
    size = 0
    for seq, data in output_store.iter_after(key, 0):
        size += len(codec.dumps_text(frames.output("replay", seq, data)))
    return time.perf_counter() - started, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=20_000)
    count = parser.parse_args().chunks
    workdir = Path(tempfile.mkdtemp(prefix="output-bench-"))
    port = localserver.free_port()
    proc = localserver.start_dynalite(port, workdir / "db")
    try:
        endpoint = f"http://127.0.0.1:{port}"
        localserver.wait_until_up(endpoint)
        base.configure(base.StoreConfig(endpoint_url=endpoint, table_prefix="outbench"))
        tables.create_all()
        base.warm_up()
        burst = writes_per_thousand_burst()
        paced = asyncio.run(writes_per_thousand_paced())
        rate, seen = asyncio.run(chunks_per_second(count))
        replay_s, replay_bytes = replay_seconds()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"DynamoDB writes per 1,000 chunks, one burst:        {burst:.0f}")
    print(f"DynamoDB writes per 1,000 chunks, over ~1 s:        {paced:.0f}")
    print(f"chunks per second, one request ({seen} frames):  {rate:,.0f}")
    print(f"replay of an 8 MiB stream ({replay_bytes:,} bytes of frames): {replay_s:.2f} s")


if __name__ == "__main__":
    main()
