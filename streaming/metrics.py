"""Prometheus metrics (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("streamer_connections", "Open WebSocket connections in this process")
CONNECTS = Counter("streamer_connects_total", "Handshakes by outcome", ["outcome"])
FRAMES_IN = Counter("streamer_frames_in_total", "Client frames by type", ["type"])
FRAMES_OUT = Counter("streamer_frames_out_total", "Server frames by type", ["type"])
SLOW_CONSUMERS = Counter(
    "streamer_slow_consumers_total", "Sockets closed with 4408: the client stopped reading"
)
ERRORS = Counter("streamer_errors_total", "Error frames by code", ["code"])
REQUEST_SECONDS = Histogram(
    "streamer_request_seconds",
    "Async request time from enqueue to terminal state",
    ["action", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
QUEUE_WAIT_SECONDS = Histogram(
    "streamer_queue_wait_seconds",
    "Time a request waited between enqueue (or retry due time) and its claim",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
WORKER_JOBS = Gauge("streamer_worker_jobs", "Requests running in this worker")
