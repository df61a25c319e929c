"""Cost of each store operation against the embedded DynamoDB (dynalite, on disk):
DynamoDB calls per operation (counted by the botocore hook) and latency p50/p99.

    python -m bench.store_ops [--n 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streaming.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")  # a local measurement: the development key will do

import django

django.setup()

from storage import base, localserver, tables  # noqa: E402
from storage.connection import ConnectionInfo, connection_store  # noqa: E402
from storage.requests.model import RequestKey  # noqa: E402
from storage.requests.store import request_store  # noqa: E402
from storage.subscription import subscription_store  # noqa: E402


def total_calls() -> float:
    return sum(
        sample.value
        for metric in base.DYNAMODB_CALLS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def measure(name: str, n: int, op: Callable[[int], Any], rows: list[tuple]) -> None:
    times = []
    before = total_calls()
    for i in range(n):
        t = time.perf_counter()
        op(i)
        times.append((time.perf_counter() - t) * 1000)
    calls = (total_calls() - before) / n
    ordered = sorted(times)
    rows.append((name, calls, statistics.median(times), ordered[int(0.99 * (n - 1))]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    n = parser.parse_args().n
    workdir = Path(tempfile.mkdtemp(prefix="store-ops-"))
    port = localserver.free_port()
    proc = localserver.start_dynalite(port, workdir / "db")
    try:
        endpoint = f"http://127.0.0.1:{port}"
        localserver.wait_until_up(endpoint)
        base.configure(base.StoreConfig(endpoint_url=endpoint, table_prefix="ops"))
        tables.create_all()
        base.warm_up()
        rows: list[tuple] = []

        def conn(i):
            return ConnectionInfo(f"c{i}", "acme", f"u{i % 10}", "channels", f"specific.x!{i}")

        measure("connection.save", n, lambda i: connection_store.save(conn(i)), rows)
        measure("connection.get", n, lambda i: connection_store.get(f"c{i}"), rows)
        measure("connection.touch", n, lambda i: connection_store.touch(f"c{i}"), rows)
        measure(
            "connection.list_by_user (50)",
            n,
            lambda i: connection_store.list_by_user("acme", "u1"),
            rows,
        )
        measure(
            "connection.list_by_tenant (50)",
            n,
            lambda i: connection_store.list_by_tenant("acme"),
            rows,
        )
        measure(
            "connection.count_by_tenant (200)",
            n,
            lambda i: connection_store.count_by_tenant("acme"),
            rows,
        )
        measure(
            "subscription.subscribe",
            n,
            lambda i: subscription_store.subscribe(f"k{i % 20}", f"c{i}", "channels", "x"),
            rows,
        )
        measure(
            "subscription.list_by_request",
            n,
            lambda i: subscription_store.list_by_request(f"k{i % 20}"),
            rows,
        )
        measure("connection.delete", n, lambda i: connection_store.delete(f"c{i}"), rows)
        key = lambda i: RequestKey("acme", "u1", f"r{i}")  # noqa: E731
        measure(
            "request.enqueue",
            n,
            lambda i: request_store.enqueue(
                tenant_id="acme", user_id="u1", request_id=f"r{i}", action="a", payload={"i": i}
            ),
            rows,
        )
        measure("request.get", n, lambda i: request_store.get(key(i)), rows)
        measure("request.claim", n, lambda i: request_store.claim(key(i), "w1", 30_000), rows)
        measure(
            "request.renew_lease",
            n,
            lambda i: request_store.renew_lease(key(i), "w1", 30_000),
            rows,
        )
        measure(
            "request.update_progress",
            n,
            lambda i: request_store.update_progress(key(i), 50, "half"),
            rows,
        )
        measure("request.complete", n, lambda i: request_store.complete(key(i), {"ok": i}), rows)
        measure(
            "request.list_by_user (20)", n, lambda i: request_store.list_by_user("acme", "u1"), rows
        )
        measure("request.list_due (4 shards)", n, lambda i: request_store.list_due(), rows)
        measure(
            "request.batch_get (20)",
            n,
            lambda i: request_store.batch_get([key(j) for j in range(20)]),
            rows,
        )
        print(
            f"{'operation':36} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8}   (n={n}, dynalite on disk)"
        )
        for name, calls, p50, p99 in rows:
            print(f"{name:36} {calls:6.2f} {p50:8.2f} {p99:8.2f}")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
