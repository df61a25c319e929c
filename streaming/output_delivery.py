"""How ``output`` frames reach clients (docs/protocol.md 1.1 §2.2).

* Live: the worker sends each stored batch, in order, to the sender and the subscribers
  as of now (:func:`publish_output`).
* Replay: ``request.status`` with ``after_seq`` sends the stored chunks a client missed
  after the response (:func:`replay_output`). The caller subscribes first and reads
  storage second; the connection's DeliveryGuard holds live frames that run ahead of
  the replay and drops those the replay already sent, so the client gets every chunk
  once, in order, even while the stream is running.

Both send many frames per transport message (one channel-layer message per batch, not
per chunk) and wait for room when a client's channel is full instead of dropping a
chunk, for up to :data:`PATIENCE_S`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from connections.manager import Target, manager
from connections.storage_pool import run_storage
from connections.transports.channels import REPLAY_MARK
from protocol import codec, frames
from protocol.frames import Frame
from storage.requests.model import RequestKey, RequestRecord
from storage.requests.output import READ_PAGE, output_store
from streaming.session import Session

log = logging.getLogger(__name__)

PATIENCE_S = 5.0  # how long a full channel is waited for before the client is skipped
MESSAGE_BYTES = 256 * 1024  # frames per transport message (a channel-layer message)
DEFERRED_TRANSPORT = "apigw"  # its handler posts replies itself, then the replays
_replays: set[asyncio.Task[None]] = set()
_after_reply: dict[str, list[Coroutine[Any, Any, None]]] = {}


class OutputPublisher:
    """Sends one request's stored chunks live, in order, to its sender and every
    subscriber as of each batch (read afresh once per batch: a client that subscribed
    before its replay read must get every chunk that read did not see).

    Each connection gets the batch on its own, so a slow one delays only itself; one
    that stays unreachable is skipped for the rest of the stream (it resumes with
    ``after_seq`` when it comes back)."""

    def __init__(self, record: RequestRecord) -> None:
        self.record = record
        self.skipped: set[str] = set()

    async def __call__(self, chunks: list[tuple[int, Any]]) -> None:
        """Publish one stored batch (the writer's ``publish``)."""
        from streaming.lifecycle import origin_of  # lifecycle imports this module

        targets = await manager.subscribers(self.record.key.as_string(), fresh=True)
        origin = origin_of(self.record)
        if origin is not None and all(t.connection_id != origin.connection_id for t in targets):
            targets = [origin, *targets]
        batch = [frames.output(self.record.request_id, seq, data) for seq, data in chunks]
        texts = [codec.dumps_text(frame) for frame in batch]
        live = [t for t in targets if t.connection_id not in self.skipped]
        await asyncio.gather(*(self._send_batch(t, batch, texts) for t in live))

    async def _send_batch(self, target: Target, batch: list[Frame], texts: list[str]) -> None:
        if not await _send_in_order(target, batch, texts):
            self.skipped.add(target.connection_id)


async def replay_output(session: Session, key: RequestKey, after_seq: int) -> None:
    """Read the first page of stored output after ``after_seq`` now and send it (and
    the pages after it) in the background, after the response under way."""
    first = await run_storage(output_store.read_after, key, after_seq)
    if not first:
        session.guard.end_replay(key.request_id)  # nothing held: all of it comes live
        return
    sending = _send_pages(session.target, key, first)
    if session.transport == DEFERRED_TRANSPORT:
        _after_reply.setdefault(session.connection_id, []).append(sending)
        return
    task = asyncio.create_task(sending)  # the consumer sends its reply first
    _replays.add(task)
    task.add_done_callback(_replays.discard)


async def send_replays_after_reply(connection_id: str) -> None:
    """API Gateway: send the replays a frame asked for once its reply was posted (a
    Lambda invocation runs nothing after it returns, so it waits for them)."""
    for sending in _after_reply.pop(connection_id, []):
        await sending


async def _send_pages(target: Target, key: RequestKey, batch: list[tuple[int, Any]]) -> None:
    try:
        while batch:
            more = []
            if len(batch) == READ_PAGE:
                more = await run_storage(output_store.read_after, key, batch[-1][0])
            plain = [frames.output(key.request_id, seq, data) for seq, data in batch]
            texts = [codec.dumps_text(frame) for frame in plain]
            marked = [{**frame, REPLAY_MARK: "more"} for frame in plain]
            if not more:
                marked[-1][REPLAY_MARK] = "last"
            if not await _send_in_order(target, marked, texts):
                return
            batch = more
    except Exception:
        log.warning("output replay of %s stopped", key.request_id, exc_info=True)


async def _send_in_order(target: Target, batch: list[Frame], texts: list[str]) -> bool:
    """Send frames in order, a message of up to MESSAGE_BYTES at a time; False when
    the client is gone or stays unreachable."""
    start = 0
    while start < len(batch):
        end, size = start, 0
        while end < len(batch) and (end == start or size + len(texts[end]) <= MESSAGE_BYTES):
            size += len(texts[end])
            end += 1
        if not await _send(target, batch[start:end], texts[start:end]):
            return False
        start = end
    return True


async def _send(target: Target, batch: list[Frame], texts: list[str]) -> bool:
    """Send one message, waiting for room while the client's channel is full (its
    consumer is behind) for up to PATIENCE_S; False: gone, or still full after that
    (it resumes with ``after_seq`` when it reconnects)."""
    deadline = asyncio.get_running_loop().time() + PATIENCE_S
    pause = 0.01
    while True:
        outcome = await manager.send_many_to_target(target, batch, texts)
        if outcome == "delivered":
            return True
        if outcome == "gone" or asyncio.get_running_loop().time() + pause > deadline:
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)
