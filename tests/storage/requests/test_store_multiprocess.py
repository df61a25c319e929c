"""Claims from several OS processes against a real DynamoDB-compatible server (dynalite):
each request is claimed by exactly one of them."""

from __future__ import annotations

import multiprocessing
import os
import random
from typing import Any

import pytest

from storage.base import StoreConfig
from storage.requests.store import request_store

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")

PROCESSES = 3
REQUESTS = 30


def claim_everything(
    config: StoreConfig, keys: list[str], worker_id: str, barrier: Any, results: Any
) -> None:
    """Runs in a spawned process: try to claim every key, in its own random order."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streaming.settings")
    from storage import base
    from storage.requests.model import RequestKey
    from storage.requests.store import request_store

    base.configure(config)
    base.warm_up()
    order = list(keys)
    random.shuffle(order)
    barrier.wait(60)  # everyone starts claiming at once
    won = [k for k in order if request_store.claim(RequestKey.from_string(k), worker_id, 60_000)]
    results.put((worker_id, won))


@pytest.mark.integration
def test_processes_racing_over_the_same_requests_claim_each_once(
    local_dynamodb: StoreConfig,
) -> None:
    records = [
        request_store.enqueue(
            tenant_id="acme",
            user_id=f"user{i % 4}",
            request_id=f"mp-{i}",
            action="t.job",
            payload={"i": i},
        )
        for i in range(REQUESTS)
    ]
    keys = [r.key.as_string() for r in records]
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(PROCESSES)
    results = spawn.Queue()
    processes = [
        spawn.Process(
            target=claim_everything,
            args=(local_dynamodb, keys, f"proc-{n}", barrier, results),
        )
        for n in range(PROCESSES)
    ]
    for p in processes:
        p.start()
    try:
        outcomes = dict(results.get(timeout=90) for _ in processes)
    finally:
        for p in processes:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in processes)

    claimed = [k for won in outcomes.values() for k in won]
    assert sorted(claimed) == sorted(keys), "every request claimed exactly once"
    for worker_id, won in outcomes.items():
        for key in won:
            stored = request_store.get(next(r.key for r in records if r.key.as_string() == key))
            assert stored.lease_owner == worker_id
            assert stored.attempts == 1
