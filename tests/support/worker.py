"""Helpers of the worker tests: the fake socket, submitting a request, checking a
stream of frames against docs/protocol.md §6, running workers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from channels.layers import InMemoryChannelLayer

from connections.models import Tenant
from protocol import frames
from storage.requests.model import RequestRecord
from storage.requests.store import RequestStore, request_store
from streaming.lifecycle import wake_worker
from streaming.worker import Worker

TENANT = "acme"
TERMINAL = ("complete", "error")
_ids = itertools.count()


class ApiCalls:
    """botocore operations made while installed (thread-safe)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        with self._lock:
            self.calls.append(name)

    def count(self, *names: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if not names or c in names)

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


# --- the fake socket ---------------------------------------------------------------------


class FakeSocket:
    """What a browser would see: every message the Channels transport put on the
    connection's channel, decoded, in order."""

    def __init__(self, layer: InMemoryChannelLayer, channel: str, user_id: str) -> None:
        self.layer = layer
        self.channel = channel
        self.user_id = user_id
        self.connection_id = f"conn-{uuid.uuid4().hex[:10]}"
        self.seen: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []

    async def _receive(self, wait_s: float) -> dict[str, Any] | None:
        try:
            message = await asyncio.wait_for(self.layer.receive(self.channel), wait_s)
        except TimeoutError:
            return None
        self.messages.append(message)
        # "streamer.frames" carries several frame messages at once (a batch of output).
        batch = message["frames"] if message["type"] == "streamer.frames" else [message]
        for one in batch:
            if one["type"] == "streamer.frame":
                frame = orjson.loads(one["text"])
                # The transport's routing fields agree with the frame itself.
                assert one["frame_type"] == frame["type"]
                assert one["request_id"] == frame.get("request_id")
                assert one["percentage"] == frame.get("percentage")
                assert one.get("seq") == frame.get("seq")
                self.seen.append(frame)
        return message

    async def next_frame(self, within: float = 10.0) -> dict[str, Any]:
        before = len(self.seen)
        deadline = asyncio.get_running_loop().time() + within
        while len(self.seen) == before:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or await self._receive(left) is None:
                raise AssertionError(f"no frame within {within}s; seen {self.seen}")
        return self.seen[-1]

    async def until_terminal(self, request_id: str, within: float = 15.0) -> list[dict[str, Any]]:
        """Frames about ``request_id`` up to and including its first terminal frame."""
        deadline = asyncio.get_running_loop().time() + within
        while not any(
            f.get("request_id") == request_id and f["type"] in TERMINAL for f in self.seen
        ):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no terminal frame for {request_id}; seen {self.seen}")
            await self._receive(left)
        return self.about(request_id)

    async def drain(self, quiet_s: float = 0.1) -> list[dict[str, Any]]:
        """Everything still arriving until the channel stays quiet for ``quiet_s``."""
        while await self._receive(quiet_s) is not None:
            pass
        return self.seen

    def about(self, request_id: str) -> list[dict[str, Any]]:
        return [f for f in self.seen if f.get("request_id") == request_id]


def new_request_id(prefix: str = "r") -> str:
    return f"{prefix}-{next(_ids)}-{uuid.uuid4().hex[:6]}"


async def submit(
    sock: FakeSocket,
    action: str,
    payload: dict[str, Any] | None = None,
    *,
    request_id: str | None = None,
    wake: bool = True,
    shards: int = 1,
    store: RequestStore = request_store,
    **enqueue_args: Any,
) -> RequestRecord:
    """What the pipeline does for an async action: store the request with its origin,
    answer ``acknowledgment`` on the socket, nudge a worker."""
    record = await asyncio.to_thread(
        store.enqueue,
        tenant_id=TENANT,
        user_id=sock.user_id,
        request_id=request_id or new_request_id(),
        action=action,
        payload=payload or {},
        connection_id=sock.connection_id,
        origin_transport="channels",
        origin_address=sock.channel,
        shards=shards,
        **enqueue_args,
    )
    await sock.layer.send(
        sock.channel,
        {
            "type": "streamer.frame",
            "text": orjson.dumps(frames.acknowledgment(record.request_id)).decode(),
            "frame_type": "acknowledgment",
            "request_id": record.request_id,
            "percentage": None,
        },
    )
    if wake:
        await wake_worker(record.key.as_string())
    return record


def check_stream(stream: list[dict[str, Any]]) -> dict[str, Any]:
    """docs/protocol.md §6 for one request on one connection; returns the terminal frame."""
    assert stream, "no frames"
    assert stream[0]["type"] == "acknowledgment", stream
    kinds = [f["type"] for f in stream]
    assert kinds.count("acknowledgment") == 1, kinds
    terminals = [i for i, k in enumerate(kinds) if k in TERMINAL]
    assert len(terminals) == 1, kinds
    assert terminals[0] == len(stream) - 1, f"frames after the terminal one: {kinds}"
    assert set(kinds[1:-1]) <= {"progress"}, kinds
    percentages = [f["percentage"] for f in stream if f["type"] == "progress"]
    assert percentages == sorted(percentages), percentages
    assert all(0 <= p <= 100 for p in percentages), percentages
    for frame in stream:
        assert isinstance(frame["timestamp"], int)
    return stream[-1]


# --- running a worker --------------------------------------------------------------------


async def set_max_running(tenant_id: str, max_running: int | None) -> None:
    """The tenant's "max running" in the admin: requests one worker runs for it at once
    (None: half of the worker's slots)."""
    await asyncio.to_thread(
        Tenant.objects.update_or_create,
        pk=tenant_id,
        defaults={"name": tenant_id, "max_running": max_running},
    )


@contextlib.asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[asyncio.Event]:
    """Run ``workers`` on this loop until the block ends; then stop them cleanly."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        yield stop
    finally:
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=20)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()
        assert not pending, "a worker did not stop"


async def eventually(
    predicate: Callable[[], Any], within: float = 10.0, what: str = "condition"
) -> Any:
    """Wait until ``predicate()`` (sync or async) is truthy; a safety net, not a speed test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {within}s")
        await asyncio.sleep(0.01)
