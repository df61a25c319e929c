"""A WebSocket client for live stacks: a background task collects every frame, so a
test can wait for a frame matching a predicate and later look at everything that
arrived."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TERMINAL_TYPES = ("complete", "error")


class WSClient:
    """A websockets connection whose frames a background task collects, so a test can
    wait for a frame matching a predicate and later look at everything that arrived."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed = False
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                frame["_rx"] = time.perf_counter()
                self.frames.append(frame)
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._changed.set()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def send(self, frame: dict[str, Any] | str) -> float:
        """Send a frame; the perf_counter time it left."""
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        return time.perf_counter()

    async def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        within: float = 10.0,
        since: int = 0,
        what: str = "a frame",
    ) -> dict[str, Any]:
        """The first frame from index ``since`` on that matches ``predicate``."""
        deadline = asyncio.get_running_loop().time() + within
        index = since
        while True:
            self._changed.clear()
            for frame in self.frames[index:]:
                if predicate(frame):
                    return frame
            index = max(index, len(self.frames))
            if self.closed:
                raise AssertionError(
                    f"socket closed ({self.close_code}) while waiting for {what}: {self.brief()}"
                )
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {within}s waiting for {what}: {self.brief()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)

    def brief(self, last: int = 12) -> str:
        """The last frames received, shortened, for assertion messages."""
        shown = [
            {
                k: v
                for k, v in f.items()
                if k in ("type", "request_id", "percentage", "status", "error")
            }
            for f in self.frames[-last:]
        ]
        return f"{len(self.frames)} frames, last: {shown}"

    async def call(
        self, action: str, payload: dict[str, Any] | None = None, *, within: float = 10.0
    ) -> dict[str, Any]:
        """Run a synchronous action; its ``response`` or ``error`` frame."""
        request_id = f"call-{uuid.uuid4().hex[:12]}"
        since = len(self.frames)
        await self.send({"action": action, "id": request_id, "payload": payload or {}})
        return await self.wait_for(
            lambda f: f.get("request_id") == request_id and f["type"] in ("response", "error"),
            within=within,
            since=since,
            what=f"the answer to {action}",
        )

    async def submit(
        self,
        request_id: str,
        payload: dict[str, Any] | None = None,
        *,
        action: str = "generate_report",
        within: float = 10.0,
    ) -> dict[str, Any]:
        """Send an asynchronous request; its ``acknowledgment`` (or ``error``) frame."""
        since = len(self.frames)
        await self.send({"action": action, "id": request_id, "payload": payload or {}})
        return await self.wait_for(
            lambda f: (
                f.get("request_id") == request_id and f["type"] in ("acknowledgment", "error")
            ),
            within=within,
            since=since,
            what=f"the acknowledgment of {request_id}",
        )

    async def terminal(
        self, request_id: str, *, within: float = 15.0, since: int = 0
    ) -> dict[str, Any]:
        """The terminal (``complete``/``error``) frame of ``request_id``."""
        return await self.wait_for(
            lambda f: f.get("request_id") == request_id and f["type"] in TERMINAL_TYPES,
            within=within,
            since=since,
            what=f"the terminal frame of {request_id}",
        )

    def about(self, request_id: str, since: int = 0) -> list[dict[str, Any]]:
        """Every frame received about ``request_id`` (answers to ``call`` carry their own ids)."""
        return [f for f in self.frames[since:] if f.get("request_id") == request_id]

    async def wait_closed(self, within: float = 10.0) -> int | None:
        """Wait until the server closes the socket; its close code."""
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout=within)
        except TimeoutError:
            raise AssertionError(f"socket still open after {within}s: {self.brief()}") from None
        return self.close_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), timeout=3)
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


WSClientContext = contextlib.AbstractAsyncContextManager[WSClient]


@contextlib.asynccontextmanager
async def open_client(url: str) -> AsyncIterator[WSClient]:
    """Connect (no Origin header, like a non-browser client) and collect frames."""
    ws = await connect(url, open_timeout=10, close_timeout=3, ping_interval=None, max_size=2**22)
    client = WSClient(ws)
    try:
        yield client
    finally:
        await client.close()


# --- checks ---------------------------------------------------------------------------------


def check_request_stream(
    frames: list[dict[str, Any]], *, terminal: str = "complete", expect_ack: bool = True
) -> dict[str, Any]:
    """docs/protocol.md §6 for one request on one connection: acknowledgment first (when
    this connection sent it), progress never decreasing, output seqs consecutive, exactly
    one terminal frame and nothing after it. Returns the terminal frame."""
    types = [f["type"] for f in frames]
    assert all(isinstance(f.get("timestamp"), int) for f in frames), frames
    terminals = [f for f in frames if f["type"] in TERMINAL_TYPES]
    assert len(terminals) == 1, f"expected one terminal frame, got {types}"
    assert frames[-1] is terminals[0], f"frames after the terminal frame: {types}"
    assert terminals[0]["type"] == terminal, terminals[0]
    if expect_ack:
        assert types[0] == "acknowledgment", types
        assert types.count("acknowledgment") == 1, types
    else:
        assert "acknowledgment" not in types, types
    percentages = [f["percentage"] for f in frames if f["type"] == "progress"]
    assert percentages == sorted(percentages), f"progress went down: {percentages}"
    assert all(0 <= p <= 100 for p in percentages), percentages
    assert set(types) <= {"acknowledgment", "progress", "output", *TERMINAL_TYPES}, types
    seqs = [f["seq"] for f in frames if f["type"] == "output"]
    if seqs:  # protocol 1.1: consecutive, without gap or duplicate, from where it started
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    return terminals[0]


def p50_ms(samples_s: list[float]) -> float:
    return statistics.median(samples_s) * 1000
