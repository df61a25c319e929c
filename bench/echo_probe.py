"""Echo round trips on one well-behaved socket, measured from a process of its own.

The slow-consumer benchmark floods the server from its own event loop (publishes, never-
reading sinks); measuring echo latency on that same loop would mostly measure the load
generator. This probe runs beside it and prints one JSON line when it ends:

    python -m bench.echo_probe URL --count 200    # a fixed number of round trips
    python -m bench.echo_probe URL                # until its standard input closes

Round trips are paced :data:`PACE_S` apart in both modes, so that a baseline and a
measurement under load compare like with like: on this idle 2-core machine a round trip
after a 10 ms pause takes about twice one sent back to back (both processes wake from
idle), which the slow-consumer budget used to count as the flood's doing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time

import websockets

ECHO_MSG = '{"action":"echo","payload":{"n":1}}'
#: Pause between two round trips (the probe is one ordinary client among the load).
PACE_S = 0.01


async def probe(url: str, count: int | None, stop: threading.Event) -> list[float]:
    """Round-trip times in ms: ``count`` of them, or until ``stop`` is set."""
    samples: list[float] = []
    async with websockets.connect(url, compression=None, max_size=None) as ws:
        while (count is None and not stop.is_set()) or (count is not None and len(samples) < count):
            sent = time.perf_counter()
            await ws.send(ECHO_MSG)
            await ws.recv()
            samples.append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(PACE_S)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--count", type=int, default=None)
    args = parser.parse_args()
    stop = threading.Event()
    if args.count is None:
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    samples = asyncio.run(probe(args.url, args.count, stop))
    print(
        json.dumps({"p50_ms": statistics.median(samples) if samples else None, "n": len(samples)})
    )


if __name__ == "__main__":
    main()
