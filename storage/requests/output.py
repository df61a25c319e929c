"""A request's output stream (docs/protocol.md 1.1 ``output``): its chunks, stored in pages.

Table ``outputs`` (prefixed by the store configuration), one item per *page* of
consecutive chunks:

* hash key ``stream`` = :meth:`RequestKey.as_string` (tenant, user, request), range key
  ``first_seq``: the seq of the page's first chunk. ``last_seq`` is the seq of its last.
* ``chunks``: the page's chunks as one JSON array (each chunk a string or an object).
* ``ttl``: pages are written while a request runs, before its record gets its own TTL
  (``ended_at`` + 7 days); they expire :data:`OUTPUT_TTL_S` after they were written,
  which outlives the record for any request that ends within a day of its last chunk.
  Output is only ever read through its record, so a page left after its record is
  never served.

A writer sends one page per flush (a batch of whatever the handler wrote since the last
one), split when it would pass :data:`PAGE_BYTES`: the number of writes grows with the
flushes and the bytes, not with the number of chunks (1,000 small chunks written in one
burst are one ``PutItem``, plus one ``UpdateItem`` of the record's ``output_seq``).

No transactions (the embedded server has none): a page is put only if no page starts
at its ``first_seq`` yet. Every writer continues right after the last stored chunk it
knows of, so two writers of one stream (a worker whose lease was taken and its
successor) both try the same ``first_seq`` next, and exactly one of them wins; the
other gets :class:`OutputConflict` and stops. Hence no gap and no repeated seq.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.models import Model

from storage.base import register_model
from storage.error_mapping import ConditionFailed, storage_call
from storage.errors import StoreError, ValidationError
from storage.requests.model import RECORD_TTL_S, RequestKey, RequestModel

MAX_CHUNK_BYTES = 64 * 1024
"""Largest chunk, as encoded JSON (docs/protocol.md §5)."""

MAX_STREAM_BYTES = 8 * 1024 * 1024
"""Most output one request may write, as encoded JSON (docs/protocol.md §5)."""

PAGE_BYTES = 300_000
"""Chunk bytes per page: with a 64 KiB chunk on top, still under DynamoDB's 400 KB item."""

OUTPUT_TTL_S = RECORD_TTL_S + 24 * 3600
"""How long after it was written a page stays (see the module docstring)."""

READ_PAGE = 1000
"""Chunks per :meth:`OutputStore.read_after` answer at most."""


class OutputConflict(StoreError):
    """Another writer already continued this stream from the same place."""


@register_model
class OutputPageModel(Model):
    """Consecutive chunks of one request's output (see the module docstring)."""

    class Meta:
        table_name = "outputs"

    stream = UnicodeAttribute(hash_key=True)
    first_seq = NumberAttribute(range_key=True)
    last_seq = NumberAttribute()
    chunks = UnicodeAttribute()
    ttl = TTLAttribute(null=True)


def encode_chunk(data: Any) -> bytes:
    """The stored form of a chunk (compact JSON); ValidationError unless it is a string
    or a JSON object of at most :data:`MAX_CHUNK_BYTES`."""
    if not isinstance(data, str | dict):
        raise ValidationError("an output chunk is a string or a JSON object")
    try:
        encoded = orjson.dumps(data)
    except TypeError as exc:
        raise ValidationError("an output chunk must be JSON-serializable") from exc
    if len(encoded) > MAX_CHUNK_BYTES:
        raise ValidationError(f"an output chunk is at most {MAX_CHUNK_BYTES} bytes as JSON")
    return encoded


def paginate(chunks: Sequence[bytes], page_bytes: int = PAGE_BYTES) -> Iterator[list[bytes]]:
    """Split encoded chunks into runs of at most ``page_bytes`` (never an empty run)."""
    run: list[bytes] = []
    size = 0
    for chunk in chunks:
        if run and size + len(chunk) > page_bytes:
            yield run
            run, size = [], 0
        run.append(chunk)
        size += len(chunk) + 1
    if run:
        yield run


class OutputStore:
    """Appends and reads output pages; raises only our typed errors."""

    def append(self, key: RequestKey, first_seq: int, chunks: Sequence[bytes]) -> int:
        """Store encoded ``chunks`` as seqs ``first_seq``… and move the record's
        ``output_seq`` up to the last. Returns the number of writes made.

        Raises OutputConflict when another writer stored a page at one of these seqs
        (nothing of this call past that page is stored).
        """
        if first_seq < 1:
            raise ValidationError("output seqs start at 1")
        writes = 0
        seq = first_seq
        expires = datetime.now(UTC) + timedelta(seconds=OUTPUT_TTL_S)
        for run in paginate(chunks):
            page = OutputPageModel(
                key.as_string(),
                seq,
                last_seq=seq + len(run) - 1,
                chunks=(b"[" + b",".join(run) + b"]").decode(),
                ttl=expires,
            )
            try:
                with storage_call("output.append"):
                    page.save(condition=OutputPageModel.stream.does_not_exist())
            except ConditionFailed:
                raise OutputConflict("another writer continued this output stream") from None
            writes += 1
            seq += len(run)
        if writes:
            self.mark_written(key, seq - 1, sum(len(chunk) for chunk in chunks))
            writes += 1
        return writes

    def mark_written(self, key: RequestKey, last_seq: int, added_bytes: int = 0) -> None:
        """Raise the record's ``output_seq`` to ``last_seq`` and add ``added_bytes`` to
        its ``output_bytes`` (never lowers the seq; nothing when the record is gone)."""
        item = RequestModel(key.owner, key.request_id)
        condition = RequestModel.owner.exists() & (
            RequestModel.output_seq.does_not_exist() | (RequestModel.output_seq < last_seq)
        )
        try:
            with storage_call("output.mark_written"):
                item.update(
                    actions=[
                        RequestModel.output_seq.set(last_seq),
                        RequestModel.output_bytes.add(added_bytes),
                    ],
                    condition=condition,
                )
        except ConditionFailed:
            pass

    def last_seq(self, key: RequestKey) -> int:
        """The seq of the last stored chunk (0 when none): where a writer continues."""
        with storage_call("output.last_seq"):
            for page in OutputPageModel.query(
                key.as_string(), scan_index_forward=False, limit=1, consistent_read=True
            ):
                return int(page.last_seq)
        return 0

    def read_after(
        self, key: RequestKey, after_seq: int, limit: int = READ_PAGE
    ) -> list[tuple[int, Any]]:
        """Up to ``limit`` stored chunks with a seq above ``after_seq``, in order, as
        (seq, data) pairs. Call again from the last seq returned for the next page."""
        if after_seq < 0 or limit < 1:
            raise ValidationError("after_seq must be >= 0 and limit >= 1")
        found: list[tuple[int, Any]] = []
        stream = key.as_string()
        with storage_call("output.read"):
            # The page holding after_seq + 1 starts at or before it; the rest after it.
            head = OutputPageModel.query(
                stream,
                OutputPageModel.first_seq <= after_seq + 1,
                scan_index_forward=False,
                limit=1,
                consistent_read=True,
            )
            rest = OutputPageModel.query(
                stream,
                OutputPageModel.first_seq > after_seq + 1,
                consistent_read=True,
                page_size=4,
            )
            for page in itertools.chain(head, rest):
                first = int(page.first_seq)
                for offset, data in enumerate(orjson.loads(page.chunks)):
                    if first + offset > after_seq:
                        found.append((first + offset, data))
                        if len(found) >= limit:
                            return found
        return found

    def iter_after(self, key: RequestKey, after_seq: int) -> Iterator[tuple[int, Any]]:
        """Every stored chunk above ``after_seq``, in order, one read page at a time."""
        while True:
            batch = self.read_after(key, after_seq)
            yield from batch
            if len(batch) < READ_PAGE:
                return
            after_seq = batch[-1][0]

    def delete(self, key: RequestKey) -> int:
        """Delete a request's whole stream (admin clean-up, tests); returns pages deleted."""
        deleted = 0
        with storage_call("output.delete"), OutputPageModel.batch_write() as writer:
            for page in OutputPageModel.query(key.as_string()):
                writer.delete(page)
                deleted += 1
        return deleted


output_store = OutputStore()
