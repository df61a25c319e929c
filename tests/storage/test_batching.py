"""storage.batching: bulk deletes through PynamoDB's ``batch_write()``, with the running
total reported after each BatchWriteItem call."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.client import BaseClient

from storage import base
from storage.batching import BATCH_WRITE_LIMIT, delete_in_batches
from storage.subscription import SubscriptionModel, subscription_store


@pytest.mark.parametrize(
    ("count", "batch_size", "progress", "calls"),
    [
        pytest.param(0, BATCH_WRITE_LIMIT, [], 0, id="nothing"),
        pytest.param(1, BATCH_WRITE_LIMIT, [1], 1, id="one"),
        pytest.param(25, BATCH_WRITE_LIMIT, [25], 1, id="exactly-one-batch"),
        pytest.param(26, BATCH_WRITE_LIMIT, [25, 26], 2, id="one-more"),
        pytest.param(60, BATCH_WRITE_LIMIT, [25, 50, 60], 3, id="several"),
        pytest.param(5, 2, [2, 4, 5], 3, id="small-batches"),
    ],
)
def test_deletes_every_item_and_reports_each_batch(
    dynamodb: base.StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    batch_size: int,
    progress: list[int],
    calls: int,
) -> None:
    for n in range(count):
        subscription_store.subscribe(f"r{n}", "c1", "channels", "addr")
    subscription_store.subscribe("other", "c2", "channels", "addr")
    original = BaseClient._make_api_call
    sizes: list[int] = []

    def record(self: BaseClient, operation_name: str, params: dict[str, Any]) -> Any:
        if operation_name == "BatchWriteItem":
            sizes.append(sum(len(v) for v in params["RequestItems"].values()))
        return original(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    seen: list[int] = []
    items = (SubscriptionModel(f"r{n}", "c1") for n in range(count))
    assert (
        delete_in_batches(SubscriptionModel, items, batch_size=batch_size, on_batch=seen.append)
        == count
    )
    assert seen == progress
    assert len(sizes) == calls and all(size <= batch_size for size in sizes)
    assert subscription_store.list_by_connection("c1") == []
    assert [s.request_key for s in subscription_store.list_by_connection("c2")] == ["other"]
