"""Contract of the output store (storage/requests/output.py), against moto AND dynalite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import botocore.client
import orjson
import pytest

from storage import base
from storage.errors import ValidationError
from storage.requests import RequestKey, RequestStore
from storage.requests.output import (
    MAX_CHUNK_BYTES,
    PAGE_BYTES,
    OutputConflict,
    OutputPageModel,
    OutputStore,
    encode_chunk,
    paginate,
)

KEY = RequestKey("acme", "alice", "r1")


@pytest.fixture
def outputs(dynamodb: base.StoreConfig) -> OutputStore:
    RequestStore().enqueue(
        tenant_id=KEY.tenant_id,
        user_id=KEY.user_id,
        request_id=KEY.request_id,
        action="report.run",
        payload={},
        connection_id="c1",
        origin_transport="channels",
        origin_address="x",
    )
    return OutputStore()


@pytest.fixture
def writes() -> Iterator[list[str]]:
    """The names of the DynamoDB calls made while the test runs."""
    calls: list[str] = []
    original = botocore.client.BaseClient._make_api_call

    def counting(self: Any, operation_name: str, api_params: Any) -> Any:
        calls.append(operation_name)
        return original(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = counting  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        botocore.client.BaseClient._make_api_call = original  # type: ignore[method-assign]


def chunks(first: int, count: int) -> list[bytes]:
    return [encode_chunk(f"line {seq}") for seq in range(first, first + count)]


def test_a_thousand_small_chunks_cost_two_writes(outputs: OutputStore, writes: list[str]) -> None:
    made = outputs.append(KEY, 1, chunks(1, 1000))
    assert made == 2
    assert writes == ["PutItem", "UpdateItem"]
    assert RequestStore().get(KEY).public()["output_seq"] == 1000


def test_chunks_read_back_in_order_across_pages(outputs: OutputStore) -> None:
    big = [encode_chunk("x" * (MAX_CHUNK_BYTES - 2))] * 12  # about 2.6 pages
    assert outputs.append(KEY, 1, big) == 3 + 1
    assert outputs.append(KEY, 13, chunks(13, 5)) == 2
    stored = list(outputs.iter_after(KEY, 0))
    assert [seq for seq, _ in stored] == list(range(1, 18))
    assert stored[-1] == (17, "line 17")
    assert outputs.last_seq(KEY) == 17
    assert OutputPageModel.count(KEY.as_string()) == 4


@pytest.mark.parametrize(
    ("after", "expected"),
    [(0, list(range(1, 31))), (9, list(range(10, 31))), (10, list(range(11, 31))), (30, [])],
)
def test_read_after_starts_inside_a_page(outputs: OutputStore, after: int, expected: list) -> None:
    for first in (1, 11, 21):
        outputs.append(KEY, first, chunks(first, 10))
    assert [seq for seq, _ in outputs.read_after(KEY, after)] == expected


def test_read_after_pages_by_limit(outputs: OutputStore) -> None:
    outputs.append(KEY, 1, chunks(1, 25))
    first = outputs.read_after(KEY, 0, limit=10)
    second = outputs.read_after(KEY, first[-1][0], limit=10)
    assert [s for s, _ in first + second] == list(range(1, 21))


def test_two_writers_from_the_same_place_one_wins(outputs: OutputStore) -> None:
    outputs.append(KEY, 1, chunks(1, 3))
    results: list[Any] = []

    def write(label: str) -> None:
        try:
            results.append(outputs.append(KEY, 4, [encode_chunk(label)] * 5))
        except OutputConflict:
            results.append("conflict")

    threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results, key=str) == [2, "conflict"]
    stored = list(outputs.iter_after(KEY, 0))
    assert [seq for seq, _ in stored] == list(range(1, 9))
    assert len({data for _, data in stored[3:]}) == 1  # one writer's chunks only


def test_output_seq_never_goes_down(outputs: OutputStore) -> None:
    outputs.append(KEY, 1, chunks(1, 10))
    outputs.mark_written(KEY, 4)
    assert RequestStore().get(KEY).output_seq == 10


def test_no_output_means_no_output_seq(outputs: OutputStore) -> None:
    assert outputs.last_seq(KEY) == 0
    assert outputs.read_after(KEY, 0) == []
    assert "output_seq" not in RequestStore().get(KEY).public()


def test_delete_removes_the_stream(outputs: OutputStore) -> None:
    outputs.append(KEY, 1, [encode_chunk("x" * (MAX_CHUNK_BYTES - 2))] * 6)
    assert outputs.delete(KEY) == 2
    assert outputs.last_seq(KEY) == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"raw", "string or a JSON object"),
        (["a"], "string or a JSON object"),
        (7, "string or a JSON object"),
        ({"x": object()}, "JSON-serializable"),
        ("x" * MAX_CHUNK_BYTES, "at most"),
    ],
)
def test_bad_chunks_are_refused(data: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        encode_chunk(data)


@pytest.mark.parametrize(
    ("first", "after", "limit"), [(0, None, None), (None, -1, 5), (None, 0, 0)]
)
def test_bad_arguments_are_refused(first: Any, after: Any, limit: Any) -> None:
    store = OutputStore()
    with pytest.raises(ValidationError):
        if first is not None:
            store.append(KEY, first, [b'"x"'])
        else:
            store.read_after(KEY, after, limit)


def test_pages_stay_under_the_item_limit() -> None:
    runs = list(paginate([encode_chunk("y" * 40_000)] * 50))
    assert sum(len(run) for run in runs) == 50
    assert all(sum(len(c) + 1 for c in run) <= PAGE_BYTES + MAX_CHUNK_BYTES for run in runs)
    assert all(len(b"[" + b",".join(run) + b"]") < 400_000 for run in runs)
    assert orjson.loads(b"[" + b",".join(runs[0]) + b"]")[0] == "y" * 40_000
