"""Contract of :mod:`storage.base`: model registration and the DynamoDB call counter (and
what the counter shows of the stores' batching)."""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pynamodb.attributes import UnicodeAttribute
from pynamodb.models import Model

from storage import base
from storage.connection import ConnectionModel, connection_store
from storage.errors import ValidationError
from storage.subscription import subscription_store


@pytest.fixture
def scratch_model() -> Iterator[type[Model]]:
    """A model registered for this test only (taken out of the registry afterwards)."""
    base.configure(base.StoreConfig(endpoint_url="http://127.0.0.1:1", table_prefix="scratch"))

    @base.register_model
    class ScratchModel(Model):
        class Meta:
            table_name = "scratch"

        key = UnicodeAttribute(hash_key=True)

    yield ScratchModel
    base._MODELS.remove(ScratchModel)


def test_a_registered_model_takes_the_configuration_in_force(
    scratch_model: type[Model],
) -> None:
    assert scratch_model in base.registered_models()
    meta = scratch_model.Meta
    assert meta.table_name == "scratch-scratch"
    assert meta.host == "http://127.0.0.1:1"
    base.configure(base.StoreConfig(endpoint_url=None, table_prefix="other"))
    assert meta.table_name == "other-scratch"
    assert meta.host is None


def _calls(operation: str) -> float:
    value = REGISTRY.get_sample_value("streamer_dynamodb_calls_total", {"operation": operation})
    return value or 0.0


def test_warm_up_counts_each_dynamodb_call_once(moto_dynamodb: base.StoreConfig) -> None:
    base.warm_up()
    base.warm_up()  # a second warm-up must not count twice
    before = _calls("GetItem")
    assert connection_store.count_by_tenant("acme") == 0
    with pytest.raises(ConnectionModel.DoesNotExist):
        ConnectionModel.get("nobody")
    assert _calls("GetItem") == before + 1


@pytest.mark.parametrize(("count", "batches"), [(1, 1), (25, 1), (26, 2), (60, 3)])
def test_delete_by_connection_writes_25_deletes_per_batch(
    moto_dynamodb: base.StoreConfig, count: int, batches: int
) -> None:
    base.warm_up()
    for n in range(count):
        subscription_store.subscribe(f"r-{n}", "gone", "channels", "specific.gone!x")
    before = _calls("BatchWriteItem")
    assert subscription_store.delete_by_connection("gone") == count
    assert _calls("BatchWriteItem") == before + batches


@pytest.mark.parametrize(
    "key",
    [
        {"k": {"S": "a"}},  # encodes to a length needing "=" padding
        {"k": {"S": "ab"}},
        {"k": {"S": "abc"}},
        {"connection_id": {"S": "c1"}, "connected_at": {"N": "1700000000000"}},
    ],
)
def test_cursors_are_url_safe_without_padding_and_round_trip(key: dict[str, Any]) -> None:
    cursor = base.encode_cursor(key)
    assert cursor is not None
    assert set(cursor) <= set(string.ascii_letters + string.digits + "-_")
    assert base.decode_cursor(cursor) == key


@pytest.mark.parametrize("cursor", [base.encode_cursor({"x": 1})[:-1] + "!", "WzFd"])  # type: ignore[index]
def test_a_cursor_that_is_not_an_encoded_object_is_invalid(cursor: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        base.decode_cursor(cursor)
    assert str(excinfo.value) == "invalid cursor"
