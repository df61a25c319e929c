"""Prometheus metrics (served at /metrics).

Every label takes values from a fixed set (:mod:`connections.labels`): frame types,
action names and codes outside it are counted as ``other``, so no client or publisher
can create new time series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from connections.labels import BoundedLabels
from protocol.errors import ErrorCode
from storage.requests.model import RequestStatus
from streaming.actions.registry import registry

# Frame types of docs/protocol.md plus "message", the default type of published frames.
CLIENT_FRAME_TYPES = frozenset({"request", "ping", "invalid"})
SERVER_FRAME_TYPES = frozenset(
    {"response", "acknowledgment", "progress", "complete", "error", "pong", "message", "output"}
)
CONNECT_OUTCOMES = frozenset({"accepted", "1008", "1011", "1013", "4400", "4401", "4403", "4429"})
ERROR_CODES = frozenset(code.value for code in ErrorCode)
STATUSES = frozenset(status.value for status in RequestStatus)


CONNECTIONS = Gauge("streamer_connections", "Open WebSocket connections in this process")
CONNECTS = BoundedLabels(
    Counter("streamer_connects_total", "Handshakes by outcome", ["outcome"]), CONNECT_OUTCOMES
)
FRAMES_IN = BoundedLabels(
    Counter("streamer_frames_in_total", "Client frames by type", ["type"]), CLIENT_FRAME_TYPES
)
FRAMES_OUT = BoundedLabels(
    Counter("streamer_frames_out_total", "Server frames by type", ["type"]), SERVER_FRAME_TYPES
)
SLOW_CONSUMERS = Counter(
    "streamer_slow_consumers_total", "Sockets closed with 4408: the client stopped reading"
)
ERRORS = BoundedLabels(
    Counter("streamer_errors_total", "Error frames by code", ["code"]), ERROR_CODES
)
REQUEST_SECONDS = BoundedLabels(
    Histogram(
        "streamer_request_seconds",
        "Async request time from enqueue to terminal state",
        ["action", "status"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    ),
    registry,  # registered action names only; the registry is a container of them
    STATUSES,
)
QUEUE_WAIT_SECONDS = Histogram(
    "streamer_queue_wait_seconds",
    "Time a request waited between enqueue (or retry due time) and its claim",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
WORKER_JOBS = Gauge("streamer_worker_jobs", "Requests running in this worker")
