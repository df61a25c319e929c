"""Bulk deletes through PynamoDB's own ``batch_write()``: it groups the items into
BatchWriteItem calls of at most 25 and resends the items DynamoDB left unprocessed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from pynamodb.models import Model

BATCH_WRITE_LIMIT = 25  # DynamoDB's limit of items per BatchWriteItem

_M = TypeVar("_M", bound=Model)


def delete_in_batches(
    model: type[_M],
    items: Iterable[_M],
    *,
    batch_size: int = BATCH_WRITE_LIMIT,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Delete ``items`` (model instances with their keys set); returns how many were
    sent. ``on_batch`` receives the running total after each BatchWriteItem call, so a
    long cleanup can report progress. Batch deletes are unconditional: an item that
    does not exist counts too.
    """
    sent = 0
    with model.batch_write() as writer:
        writer.max_operations = batch_size
        for item in items:
            full = len(writer.pending_operations) >= writer.max_operations
            writer.delete(item)  # a full batch is committed before this item is queued
            if full:
                sent += batch_size
                if on_batch is not None:
                    on_batch(sent)
        last = len(writer.pending_operations)
    # Leaving the block committed the last, partial batch.
    if last:
        sent += last
        if on_batch is not None:
            on_batch(sent)
    return sent
