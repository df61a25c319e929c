"""Output streams through the real worker: moto for storage, the in-memory channel layer
for delivery to a fake socket (what a browser would see)."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer, channel_layers

from protocol.errors import ErrorCode
from storage.errors import StorageUnavailable
from storage.requests.model import RequestKey, RequestStatus
from storage.requests.output import MAX_CHUNK_BYTES, OutputStore, output_store
from storage.requests.store import RequestStore
from streaming import output_delivery
from streaming.actions.registry import ActionRegistry, RetryableError, action
from streaming.jobs import JobCancelled
from streaming.lifecycle import cancel as cancel_request
from streaming.output import RESENT_TAIL, OutputLost, OutputTooLarge, OutputWriter
from streaming.worker import Worker
from tests.support.worker import FakeSocket, eventually, running, submit

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")


def make_worker(store: RequestStore, actions: ActionRegistry) -> Worker:
    return Worker(
        store=store,
        actions=actions,
        concurrency=4,
        poll_interval_s=0.05,
        shards=1,
        retry_base_s=0.01,
    )


def outputs_and_terminal(frames: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The ``output`` frames of a stream, checking that nothing follows its terminal."""
    kinds = [f["type"] for f in frames]
    assert kinds[-1] in ("complete", "error"), kinds[-5:]
    assert kinds.count("complete") + kinds.count("error") == 1
    return [f for f in frames if f["type"] == "output"], kinds[-1]


def stored_stream(key: RequestKey) -> list[tuple[int, Any]]:
    return list(output_store.iter_after(key, 0))


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_ten_thousand_chunks_arrive_in_order_and_complete(
    store: RequestStore, actions: ActionRegistry, make_socket: Any, kind: str
) -> None:
    count = 10_000

    def chunk(i: int) -> Any:
        return f"line {i}" if i % 2 else {"row": i}

    if kind == "sync":

        @action("t.out", mode="async", registry=actions)
        def out(job: Any, payload: dict[str, Any]) -> int:
            for i in range(1, count + 1):
                job.write(chunk(i))
            return count

    else:

        @action("t.out", mode="async", registry=actions)
        async def out(job: Any, payload: dict[str, Any]) -> int:
            for i in range(1, count + 1):
                job.write(chunk(i))
                if i % 500 == 0:
                    await asyncio.sleep(0)  # lets flushes run while it writes
            return count

    sock = await make_socket()
    async with running(make_worker(store, actions)):
        record = await submit(sock, "t.out")
        frames, terminal = outputs_and_terminal(await sock.until_terminal(record.request_id, 60))

    assert terminal == "complete"
    assert [f["seq"] for f in frames] == list(range(1, count + 1))
    assert [f["data"] for f in frames] == [chunk(i) for i in range(1, count + 1)]
    assert stored_stream(record.key) == [(i, chunk(i)) for i in range(1, count + 1)]
    final = await asyncio.to_thread(store.get, record.key)
    assert final.public()["output_seq"] == count


async def test_a_retry_continues_after_the_stored_chunks(
    store: RequestStore, actions: ActionRegistry, make_socket: Any
) -> None:
    @action("t.flaky", mode="async", registry=actions)
    async def flaky(job: Any, payload: dict[str, Any]) -> str:
        for i in range(3):
            job.write(f"attempt {job.attempt} line {i}")
        if job.attempt == 1:
            raise RetryableError("later")
        return "done"

    sock = await make_socket()
    async with running(make_worker(store, actions)):
        record = await submit(sock, "t.flaky")
        frames, terminal = outputs_and_terminal(await sock.until_terminal(record.request_id))

    assert terminal == "complete"
    expected = [f"attempt {a} line {i}" for a in (1, 2) for i in range(3)]
    # The retry sends attempt 1's stored tail again first; the socket's delivery guard
    # (streaming/session.py) drops the seqs it already had, as this does.
    shown: list[tuple[int, Any]] = []
    for f in frames:
        if not shown or f["seq"] > shown[-1][0]:
            shown.append((f["seq"], f["data"]))
    assert shown == list(enumerate(expected, start=1))
    assert [f["seq"] for f in frames] == [1, 2, 3, 1, 2, 3, 4, 5, 6]
    assert stored_stream(record.key) == list(enumerate(expected, start=1))


@pytest.mark.parametrize(
    ("chunk", "code", "message"),
    [
        ("x" * MAX_CHUNK_BYTES, ErrorCode.PROCESSING_FAILED, "at most 65536 bytes"),
        (["a list"], ErrorCode.INTERNAL_ERROR, "Internal error"),
        (b"bytes", ErrorCode.INTERNAL_ERROR, "Internal error"),
    ],
)
async def test_a_bad_chunk_fails_the_request_and_keeps_what_came_before(
    store: RequestStore,
    actions: ActionRegistry,
    make_socket: Any,
    chunk: Any,
    code: ErrorCode,
    message: str,
) -> None:
    @action("t.bad", mode="async", registry=actions)
    async def bad(job: Any, payload: dict[str, Any]) -> None:
        job.write("before")
        job.write(chunk)

    sock = await make_socket()
    async with running(make_worker(store, actions)):
        record = await submit(sock, "t.bad")
        frames, terminal = outputs_and_terminal(await sock.until_terminal(record.request_id))

    assert terminal == "error"
    error = sock.about(record.request_id)[-1]["error"]
    assert (error["code"], message in error["message"]) == (code.value, True)
    assert [(f["seq"], f["data"]) for f in frames] == [(1, "before")]
    assert stored_stream(record.key) == [(1, "before")]


async def test_the_stream_limit_counts_earlier_attempts(store: RequestStore) -> None:
    key = RequestKey("acme", "alice", "limit")
    sent: list[tuple[int, Any]] = []

    async def publish(chunks: list[tuple[int, Any]]) -> None:
        sent.extend(chunks)

    writer = OutputWriter(asyncio.get_running_loop(), key, publish, stored_bytes=90, max_bytes=100)
    writer.write("12345678")  # 10 bytes as JSON: exactly the limit
    with pytest.raises(OutputTooLarge, match="at most 100 bytes"):
        writer.write("x")
    await writer.close()
    assert sent == [(1, "12345678")]


async def test_cancelled_handler_writes_nothing_more(
    store: RequestStore, actions: ActionRegistry, make_socket: Any
) -> None:
    started = asyncio.Event()
    raised: list[BaseException] = []

    @action("t.long", mode="async", registry=actions)
    def long(job: Any, payload: dict[str, Any]) -> None:
        job.write("first")
        loop.call_soon_threadsafe(started.set)
        try:
            while True:
                job.write("more")
                job.cancelled.wait(0.01)
        except JobCancelled as exc:
            raised.append(exc)
            raise

    loop = asyncio.get_running_loop()
    sock = await make_socket()
    worker = make_worker(store, actions)
    async with running(worker):
        record = await submit(sock, "t.long")
        await started.wait()
        await cancel_request(record.key)
        frames, terminal = outputs_and_terminal(await sock.until_terminal(record.request_id))
        await eventually(lambda: not worker.jobs, what="job stopped")
        await sock.drain()

    assert terminal == "error" and sock.about(record.request_id)[-1]["type"] == "error"
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert raised and isinstance(raised[0], JobCancelled)
    final = await asyncio.to_thread(store.get, record.key)
    assert final.status is RequestStatus.CANCELLED


async def test_writes_from_many_threads_get_consecutive_seqs(store: RequestStore) -> None:
    key = RequestKey("acme", "alice", "threads")
    sent: list[tuple[int, Any]] = []

    async def publish(chunks: list[tuple[int, Any]]) -> None:
        sent.extend(chunks)

    writer = OutputWriter(asyncio.get_running_loop(), key, publish, flush_interval_s=0.01)

    def write_many(name: str) -> None:
        for i in range(500):
            writer.write(f"{name}-{i}")

    threads = [threading.Thread(target=write_many, args=(n,)) for n in "abcd"]
    await asyncio.gather(*(asyncio.to_thread(t.run) for t in threads))
    await writer.close()
    assert [seq for seq, _ in sent] == list(range(1, 2001))
    for name in "abcd":  # each thread's chunks in its own order
        assert [d for _, d in sent if d.startswith(name)] == [f"{name}-{i}" for i in range(500)]
    assert list(OutputStore().iter_after(key, 0)) == sent


# --- the writer on its own: takeover, storage hiccups, delivery failures ---------------


class FlakyOutputs(OutputStore):
    """The real store, failing the first ``failures`` appends as DynamoDB being down."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def append(self, key: RequestKey, first_seq: int, chunks: Any) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise StorageUnavailable("injected outage")
        return super().append(key, first_seq, chunks)


async def collect(into: list[tuple[int, Any]], chunks: list[tuple[int, Any]]) -> None:
    into.extend(chunks)


async def test_a_writer_whose_stream_was_taken_over_stops(store: RequestStore) -> None:
    key = RequestKey("acme", "alice", "takeover")
    loop = asyncio.get_running_loop()
    sent_old: list[tuple[int, Any]] = []
    sent_new: list[tuple[int, Any]] = []
    old = OutputWriter(loop, key, functools.partial(collect, sent_old))
    old.write("old 1")
    await old.flush()
    new = OutputWriter(loop, key, functools.partial(collect, sent_new))  # the next owner
    new.write("new 2")
    await new.flush()
    old.write("old 2")  # the old owner continues from where it was: seq 2 is taken
    with pytest.raises(OutputLost):
        await old.close()
    old.write("ignored")
    await new.close()
    assert stored_stream(key) == [(1, "old 1"), (2, "new 2")]
    # the next owner sends the stored tail again first (guards drop what sockets had)
    assert (sent_old, sent_new) == ([(1, "old 1")], [(1, "old 1"), (2, "new 2")])


@pytest.mark.parametrize(("earlier", "resent"), [(0, 0), (3, 3), (RESENT_TAIL + 5, RESENT_TAIL)])
async def test_a_retry_sends_the_stored_tail_again_before_its_own_chunks(
    store: RequestStore, earlier: int, resent: int
) -> None:
    """An attempt that stopped (storage out, worker killed) may have stored chunks it
    never sent: the next attempt sends the last ones again first, so a subscribed
    socket sees no gap."""
    key = RequestKey("acme", "alice", f"tail-{earlier}")
    loop = asyncio.get_running_loop()
    if earlier:
        stopped = OutputWriter(loop, key, functools.partial(collect, []))
        for n in range(1, earlier + 1):
            stopped.write(f"old {n}")
        await stopped.flush()
    sent: list[tuple[int, Any]] = []
    retry = OutputWriter(loop, key, functools.partial(collect, sent))
    retry.write("new")
    await retry.close()
    old = [(n, f"old {n}") for n in range(earlier - resent + 1, earlier + 1)]
    assert sent == [*old, (earlier + 1, "new")]


@pytest.mark.parametrize(("failures", "stored"), [(1, True), (2, True), (3, False)])
async def test_chunks_survive_storage_hiccups_until_close(
    store: RequestStore, failures: int, stored: bool
) -> None:
    key = RequestKey("acme", "alice", f"flaky-{failures}")
    sent: list[tuple[int, Any]] = []
    writer = OutputWriter(
        asyncio.get_running_loop(),
        key,
        functools.partial(collect, sent),
        store=FlakyOutputs(failures),
        flush_interval_s=3600,
    )
    writer.write("a")
    writer.write({"b": 1})
    await writer.flush()  # storage down: kept for the next flush
    assert sent == [] and stored_stream(key) == []
    if stored:
        await writer.close()  # up to two more tries
    else:  # still down: no terminal frame may follow, the request ends as an outage
        with pytest.raises(StorageUnavailable):
            await writer.close()
    expected = [(1, "a"), (2, {"b": 1})] if stored else []
    assert stored_stream(key) == expected and sent == expected


async def test_a_failing_publish_loses_nothing_stored(store: RequestStore) -> None:
    key = RequestKey("acme", "alice", "nopublish")

    async def broken(chunks: list[tuple[int, Any]]) -> None:
        raise RuntimeError("layer down")

    writer = OutputWriter(asyncio.get_running_loop(), key, broken)
    writer.write("kept")
    await writer.close()
    assert stored_stream(key) == [(1, "kept")]


@pytest.mark.parametrize("failures", [1, 2])
async def test_chunks_whose_publish_failed_are_sent_again_in_order(
    store: RequestStore, failures: int
) -> None:
    """A stored chunk whose frame could not be published (the layer or the subscriber
    lookup out of reach) goes out with the next flush, before newer ones: no gap."""
    key = RequestKey("acme", "alice", f"republish-{failures}")
    sent: list[tuple[int, Any]] = []
    left = [failures]

    async def flaky(chunks: list[tuple[int, Any]]) -> None:
        if left[0]:
            left[0] -= 1
            raise RuntimeError("layer down")
        sent.extend(chunks)

    writer = OutputWriter(asyncio.get_running_loop(), key, flaky, flush_interval_s=3600)
    for n in range(1, 4):
        writer.write(f"c{n}")
        await writer.flush()
    await writer.close()
    assert sent == [(1, "c1"), (2, "c2"), (3, "c3")]
    assert stored_stream(key) == sent


async def test_a_page_worth_of_output_is_flushed_at_once(store: RequestStore) -> None:
    key = RequestKey("acme", "alice", "bulk")
    sent: list[tuple[int, Any]] = []
    writer = OutputWriter(
        asyncio.get_running_loop(), key, functools.partial(collect, sent), flush_interval_s=3600
    )
    for i in range(12):  # 12 x 40 KB: past a page, so the hour-long wait is cut short
        writer.write("x" * 40_000 + str(i))
    await eventually(lambda: len(sent) >= 7, what="a flush before the interval")
    await writer.close()
    assert [seq for seq, _ in sent] == list(range(1, 13))


@pytest.mark.parametrize("reader", ["drains", "never reads"])
async def test_a_full_channel_is_waited_for_then_skipped(
    store: RequestStore, make_socket: Any, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    monkeypatch.setattr(output_delivery, "PATIENCE_S", 0.2)
    tiny = InMemoryChannelLayer(capacity=1, expiry=60)
    channel_layers.set("default", tiny)
    sock = FakeSocket(tiny, await tiny.new_channel("socket."), "alice")
    record = await submit(sock, "t.none", wake=False)
    await sock.drain()
    publisher = output_delivery.OutputPublisher(record)
    draining = asyncio.create_task(sock.drain(5)) if reader == "drains" else None
    for seq in range(1, 4):
        await publisher([(seq, f"chunk {seq}")])
    if draining is not None:
        await draining
    else:
        await sock.drain()
    got = [f["seq"] for f in sock.about(record.request_id) if f["type"] == "output"]
    if reader == "drains":
        assert got == [1, 2, 3] and publisher.skipped == set()
    else:  # the first fits; the second waits, then the client is skipped for good
        assert got == [1] and publisher.skipped == {sock.connection_id}
