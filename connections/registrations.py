"""Connection registrations of concurrent connects, stored together.

During a reconnect storm thousands of connects each store one connection record. One
PutItem per connect means one storage round trip and one pool thread per connect;
the connects arriving while earlier writes are in flight are instead gathered and
stored with :meth:`storage.connection.ConnectionStore.save_many` (PynamoDB's
``batch_write()``, BatchWriteItem of up to 25): still one write per connection, a
round trip per 25. A lone connect is not delayed: its batch of one leaves on the next
turn of the event loop, as the PutItem it was before.

Measured reason for the hand-written gathering (``bench/storm.py``, 1,500 clients on
the loaded 2-core machine): with a PutItem per connect the storage pool's queue grew
past daphne's 5 s handshake timeout and every connect of the storm failed; PynamoDB
batches only the items one caller hands it, so the gathering across connects is ours.

What a connect sees: :meth:`RegistrationBatcher.register` returns once its own record
is stored, or raises ``StorageUnavailable`` when its batch failed; then none of that
batch's records is kept (a failed batch is deleted again, best effort), so no socket is
refused while its record stays registered.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from connections.per_loop import PerLoop
from connections.storage_pool import run_storage
from storage.batching import BATCH_WRITE_LIMIT
from storage.connection import ConnectionInfo, connection_store
from storage.errors import StorageUnavailable, StoreError

log = logging.getLogger(__name__)

#: Batches in flight at once per event loop. While they are, arriving registrations
#: wait and fill the next batch, so the batches grow with the load.
MAX_IN_FLIGHT = 4

_Waiter = tuple[ConnectionInfo, "asyncio.Future[None]"]


@dataclass
class _LoopQueue:
    """The registrations gathered on one event loop."""

    waiting: list[_Waiter] = field(default_factory=list)
    in_flight: int = 0
    scheduled: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class RegistrationBatcher:
    """Stores the connection records of concurrent connects in BatchWriteItem calls
    (see the module docstring). One queue per event loop, so it serves every loop of
    the process (each server thread, each test thread) without sharing futures."""

    def __init__(self, batch_size: int = BATCH_WRITE_LIMIT, in_flight: int = MAX_IN_FLIGHT):
        self.batch_size = batch_size
        self.max_in_flight = in_flight
        self._queues = PerLoop(_LoopQueue)

    async def register(self, info: ConnectionInfo) -> None:
        """Store ``info``; returns once it is stored. ``ValidationError`` for a record
        that cannot be stored (nothing sent); ``StorageUnavailable`` when its batch
        failed (nothing of that batch kept)."""
        connection_store.validate(info)
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        done: asyncio.Future[None] = loop.create_future()
        queue.waiting.append((info, done))
        if len(queue.waiting) >= self.batch_size:
            self._start(queue)
        elif not queue.scheduled:
            queue.scheduled = True
            loop.call_soon(self._on_next_turn, queue)
        await done

    def _on_next_turn(self, queue: _LoopQueue) -> None:
        queue.scheduled = False
        self._start(queue)

    def _start(self, queue: _LoopQueue) -> None:
        """Send the waiting registrations, a batch at a time, while fewer than
        ``max_in_flight`` batches are in flight (the rest wait for one to end)."""
        while queue.waiting and queue.in_flight < self.max_in_flight:
            batch = [(i, f) for i, f in queue.waiting[: self.batch_size] if not f.done()]
            del queue.waiting[: self.batch_size]
            if not batch:
                continue
            queue.in_flight += 1
            task = asyncio.ensure_future(self._send(queue, batch))
            queue.tasks.add(task)
            task.add_done_callback(queue.tasks.discard)

    async def _send(self, queue: _LoopQueue, batch: list[_Waiter]) -> None:
        infos = [info for info, _ in batch]
        try:
            if len(infos) == 1:  # a lone connect: one PutItem, as without batching
                await run_storage(connection_store.save, infos[0])
            else:
                await run_storage(connection_store.save_many, infos)
        except StoreError as exc:
            await _undo(infos)
            failure: BaseException | None = exc
        else:
            failure = None
        finally:
            queue.in_flight -= 1
            self._start(queue)
        abandoned = [info for info, done in batch if done.cancelled()]
        for _, done in batch:
            if done.done():
                continue
            if failure is None:
                done.set_result(None)
            else:
                done.set_exception(failure)
        if abandoned and failure is None:
            await _undo(abandoned)  # their connects were cancelled while being stored


async def _undo(infos: list[ConnectionInfo]) -> None:
    """Delete what a failed batch may have stored (BatchWriteItem stores items one by
    one), or the records of connects cancelled while stored: their sockets are not
    accepted, so none of their records may stay."""
    try:
        await run_storage(connection_store.delete_many, [i.connection_id for i in infos])
    except StorageUnavailable:
        log.warning(
            "could not remove %d connections of refused connects; cleanup_connections will",
            len(infos),
        )


#: The batcher every connect uses.
registrations = RegistrationBatcher()
