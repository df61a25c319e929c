"""Contract tests of the DynamoDB stores, and the helpers they share.

The helpers live here (not in a conftest) so that each test module imports exactly
what it uses; fixtures are imported as ``*_fixture`` and requested by their short name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from storage import base, localserver


def unreachable_config() -> base.StoreConfig:
    """A configuration whose endpoint refuses connections, with no retries."""
    return base.StoreConfig(
        endpoint_url=f"http://127.0.0.1:{localserver.free_port()}",
        table_prefix="unreachable",
        connect_timeout_s=1,
        read_timeout_s=1,
        max_retry_attempts=0,
    )


@pytest.fixture(name="unreachable")
def unreachable_fixture() -> base.StoreConfig:
    """Every model points at a closed port."""
    config = unreachable_config()
    base.configure(config)
    return config


@pytest.fixture(name="no_network")
def no_network_fixture(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """An unreachable endpoint *and* a record of every API call attempted (must stay empty)."""
    base.configure(unreachable_config())
    calls: list[str] = []

    def record(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        calls.append(operation_name)
        raise AssertionError(f"unexpected network call {operation_name}")

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return calls


def record_calls(
    monkeypatch: pytest.MonkeyPatch,
    answer: Callable[[Callable[..., Any], BaseClient, str, dict[str, Any]], Any] | None = None,
) -> list[str]:
    """From now on every DynamoDB API call is recorded (its operation name, in order);
    ``answer(original, client, operation, params)``, when given, makes the call instead
    (to make some of them fail). Returns the list of operations."""
    calls: list[str] = []
    original = BaseClient._make_api_call

    def record(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        calls.append(operation_name)
        if answer is not None:
            return answer(original, self, operation_name, api_params)
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return calls


def fail_calls_with(monkeypatch: pytest.MonkeyPatch, code: str) -> list[str]:
    """From now on every DynamoDB API call fails with the error ``code`` (as throttling
    past botocore's retries would). Returns the list of attempted operations."""
    calls: list[str] = []

    def fail(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        calls.append(operation_name)
        raise ClientError({"Error": {"Code": code, "Message": "Rate exceeded"}}, operation_name)

    monkeypatch.setattr(BaseClient, "_make_api_call", fail)
    return calls


def drain(value: Any) -> Any:
    """Consume iterators so that lazy operations really reach storage."""
    if isinstance(value, Iterator):
        return list(value)
    return value
