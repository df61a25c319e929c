"""Durable asynchronous requests: the DynamoDB model, its status machine (docs/protocol.md
§3) and the store every other part uses to enqueue, claim, report on and end them."""

from storage.requests.model import (
    ALLOWED,
    DEFAULT_SHARDS,
    FINAL,
    RECORD_TTL_S,
    RequestKey,
    RequestModel,
    RequestRecord,
    RequestStatus,
    shard_for,
)
from storage.requests.output import OutputConflict, OutputStore, output_store
from storage.requests.store import CANCELLED_ERROR, RequestStore, request_store

__all__ = [
    "ALLOWED",
    "CANCELLED_ERROR",
    "DEFAULT_SHARDS",
    "FINAL",
    "RECORD_TTL_S",
    "OutputConflict",
    "OutputStore",
    "RequestKey",
    "RequestModel",
    "RequestRecord",
    "RequestStatus",
    "RequestStore",
    "output_store",
    "request_store",
    "shard_for",
]
