"""storage.error_mapping: the one place that turns what PynamoDB and botocore raise into
our typed errors, driven through real model calls (their requests fail at the client)."""

from __future__ import annotations

from typing import Any

import pytest
from pynamodb.exceptions import DoesNotExist

from storage import base
from storage.connection import ConnectionModel
from storage.error_mapping import RETRYABLE_CODES, ConditionFailed, storage_call
from storage.errors import StorageUnavailable, StoreError
from storage.heartbeat import WorkerHeartbeatModel
from tests.storage.helpers import fail_calls_with, unreachable_fixture  # noqa: F401


def _conditional_delete() -> None:
    ConnectionModel("c1").delete(condition=ConnectionModel.connection_id.exists())


def _save() -> None:
    WorkerHeartbeatModel("w1", last_beat=1, started_at=1, jobs=0).save()


def _get() -> None:
    ConnectionModel.get("c1")


CALLS = {"delete": _conditional_delete, "save": _save, "get": _get}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ConditionalCheckFailedException", ConditionFailed),
        ("TransactionCanceledException", ConditionFailed),
        *[(code, StorageUnavailable) for code in sorted(RETRYABLE_CODES)],
        ("ValidationException", StoreError),
        ("ResourceNotFoundException", StoreError),
        ("AccessDeniedException", StoreError),
    ],
)
def test_each_answer_of_dynamodb_maps_to_one_typed_error(
    unreachable: base.StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
    call: str,
    code: str,
    expected: type[Exception],
) -> None:
    calls = fail_calls_with(monkeypatch, code)
    with pytest.raises(expected) as excinfo, storage_call("op.name"):
        CALLS[call]()
    assert type(excinfo.value) is expected
    assert calls, "the call reached the client"
    message = str(excinfo.value)
    assert code not in message and "Rate exceeded" not in message
    assert message in ("op.name", "storage rejected op.name", "storage unavailable during op.name")


def test_a_refused_connection_is_storage_unavailable(unreachable: base.StoreConfig) -> None:
    with pytest.raises(StorageUnavailable) as excinfo, storage_call("op"):
        _save()
    assert str(excinfo.value) == "storage unavailable during op"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        pytest.param(OSError("socket"), StorageUnavailable, id="os-error"),
        pytest.param(ConnectionResetError("reset"), StorageUnavailable, id="reset"),
        pytest.param(DoesNotExist(), DoesNotExist, id="does-not-exist-is-the-callers"),
        pytest.param(KeyError("bug"), KeyError, id="unrelated-untouched"),
    ],
)
def test_errors_without_a_dynamodb_answer(raised: Exception, expected: type[Any]) -> None:
    with pytest.raises(expected) as excinfo, storage_call("op"):
        raise raised
    assert type(excinfo.value) is expected
    if expected is not StorageUnavailable:
        assert excinfo.value is raised
