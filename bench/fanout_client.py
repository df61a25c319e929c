"""One client process of the fan-out benchmark (bench/fanout.py): holds a share of the
sockets, so that reading 10,000 sockets is spread over several processes and the
client side is not what is measured.

Driven by JSON lines on stdin, one JSON line answered on stdout per command:

* ``{"open": [url, ...]}``: open these sockets too → ``{"open": total, "failed": n,
  "errors": {exception name: count}}`` (every failed attempt)
* ``{"wait": id, "timeout": s}``: until every open socket got the ``bench.fan`` frame
  ``id`` (or the timeout) → ``{"received": n, "last": t, "duplicates": n}``, ``t`` on
  ``time.monotonic()`` (CLOCK_MONOTONIC: the same clock in every process of the host).

End of stdin closes every socket and exits.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from collections import defaultdict
from typing import Any

import orjson
import websockets
from websockets.exceptions import ConnectionClosed, WebSocketException

FRAME_TYPE = "bench.fan"
CONNECT_CONCURRENCY = 10  # daphne drops a handshake not done in 5 s: no storm here
CONNECT_ATTEMPTS = 5  # what is measured is the fan-out, not the connect storm
COMMAND_LIMIT = 64 * 1024 * 1024  # an "open" command carries thousands of URLs


class Sockets:
    """The sockets of this process and, per frame id, when each first got it."""

    def __init__(self) -> None:
        self.open: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []
        self.first: dict[str, dict[int, float]] = defaultdict(dict)
        self.duplicates: dict[str, int] = defaultdict(int)
        self.changed = asyncio.Event()
        self.errors: dict[str, int] = defaultdict(int)

    async def add(self, urls: list[str]) -> int:
        """Open ``urls`` (bounded concurrency, a few attempts each); how many failed
        (why: :attr:`errors`)."""
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(url: str) -> bool:
            async with gate:
                for _ in range(CONNECT_ATTEMPTS):
                    try:
                        ws = await websockets.connect(
                            url,
                            compression=None,
                            max_size=None,
                            open_timeout=60,
                            ping_interval=None,
                        )
                        break
                    except (OSError, TimeoutError, WebSocketException) as exc:
                        self.errors[type(exc).__name__] += 1
                else:
                    return False
            index = len(self.open)
            self.open.append(ws)
            self.readers.append(asyncio.create_task(self._read(index, ws)))
            return True

        opened = await asyncio.gather(*(one(u) for u in urls))
        return opened.count(False)

    async def _read(self, index: int, ws: Any) -> None:
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame.get("type") != FRAME_TYPE:
                    continue
                seen = self.first[frame["id"]]
                if index in seen:
                    self.duplicates[frame["id"]] += 1
                else:
                    seen[index] = time.monotonic()
                self.changed.set()
        except ConnectionClosed:
            pass

    async def wait(self, frame_id: str, within_s: float) -> dict[str, Any]:
        """Until every socket got ``frame_id`` or ``within_s`` passed."""
        deadline = time.monotonic() + within_s
        while len(self.first[frame_id]) < len(self.open):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                break
        times = self.first[frame_id].values()
        return {
            "received": len(times),
            "last": max(times, default=None),
            "duplicates": self.duplicates[frame_id],
        }

    async def close(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.open), return_exceptions=True)
        for reader in self.readers:
            reader.cancel()


async def serve() -> None:
    sockets = Sockets()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=COMMAND_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            command = orjson.loads(line)
            if "open" in command:
                failed = await sockets.add(command["open"])
                answer: dict[str, Any] = {
                    "open": len(sockets.open),
                    "failed": failed,
                    "errors": sockets.errors,
                }
            else:
                answer = await sockets.wait(command["wait"], command["timeout"])
            sys.stdout.write(orjson.dumps(answer).decode() + "\n")
            sys.stdout.flush()
    finally:
        await sockets.close()


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve())


if __name__ == "__main__":
    main()
