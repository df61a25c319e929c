"""storage.validators: the argument checks every store shares (no network involved)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from storage.errors import ValidationError
from storage.validators import (
    MAX_TENANT_ID,
    optional_text,
    require_choice,
    require_int,
    require_json,
    require_strings,
    require_tenant,
    require_text,
)

OK: list[tuple[Callable[[], Any], Any]] = [
    (lambda: require_text("x", "a"), "a"),
    (lambda: require_text("x", "a" * 8, 8), "a" * 8),
    (lambda: optional_text("x", ""), ""),
    (lambda: require_tenant("t" * MAX_TENANT_ID), "t" * MAX_TENANT_ID),
    (lambda: require_int("n", 0, 0), 0),
    (lambda: require_int("n", 5, 1, 5), 5),
    (lambda: require_choice("t", "apigw", {"apigw", "channels"}), "apigw"),
    (lambda: require_strings("p", ["a", "b"]), ("a", "b")),
    (lambda: require_json("j", {"a": [1, 2]}, 20), None),
]


@pytest.mark.parametrize(("check", "expected"), OK)
def test_valid_values_pass(check: Callable[[], Any], expected: Any) -> None:
    assert check() == expected


BAD: list[tuple[Callable[[], Any], str]] = [
    (lambda: require_text("x", ""), "x must be a non-empty string"),
    (lambda: require_text("x", None), "x must be a non-empty string"),
    (lambda: require_text("x", "a" * 9, 8), "at most 8 chars"),
    (lambda: optional_text("x", 3), "x must be a string"),
    (lambda: require_tenant("t" * (MAX_TENANT_ID + 1)), f"at most {MAX_TENANT_ID} chars"),
    (lambda: require_tenant("a#b"), "must not contain '#'"),
    (lambda: require_int("n", True, 0), "n must be an integer >= 0"),
    (lambda: require_int("n", 1.0, 0), "n must be an integer >= 0"),
    (lambda: require_int("n", -1, 0), "n must be an integer >= 0"),
    (lambda: require_int("n", 6, 1, 5), "n must be at most 5"),
    (lambda: require_choice("t", "smtp", {"apigw"}), "t must be one of ['apigw']"),
    (lambda: require_strings("p", "ab"), "p must be a sequence of non-empty strings"),
    (lambda: require_strings("p", ["a", ""]), "p must be a sequence of non-empty strings"),
    (lambda: require_json("j", {1, 2}, 100), "j must be JSON-serializable"),
    (lambda: require_json("j", "x" * 20, 20), "j is larger than 20 bytes"),
]


@pytest.mark.parametrize(("check", "message"), BAD)
def test_invalid_values_are_named_in_the_error(check: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        check()
    assert message in str(excinfo.value)


# One tenant id limit, whichever store is asked (no call reaches the network).
from storage.connection import ConnectionInfo, connection_store  # noqa: E402
from storage.requests import RequestKey, request_store  # noqa: E402
from tests.storage.helpers import no_network_fixture  # noqa: E402, F401

TENANT_CALLS: dict[str, Callable[[str], Any]] = {
    "connection.save": lambda t: connection_store.save(
        ConnectionInfo("c1", t, "u", "channels", "addr")
    ),
    "connection.list_by_tenant": lambda t: connection_store.list_by_tenant(t),
    "connection.count_by_user": lambda t: connection_store.count_by_user(t, "u"),
    "request.enqueue": lambda t: request_store.enqueue(
        tenant_id=t, user_id="u", request_id="r", action="a", payload={}
    ),
    "request.get": lambda t: request_store.get(RequestKey(t, "u", "r")),
    "request.list_by_tenant": lambda t: request_store.list_by_tenant(t),
}


@pytest.mark.parametrize("call", list(TENANT_CALLS))
@pytest.mark.parametrize("tenant_id", ["t" * (MAX_TENANT_ID + 1), "t" * 256, "a#b", ""])
def test_every_store_refuses_the_same_tenant_ids(
    no_network: list[str], call: str, tenant_id: str
) -> None:
    with pytest.raises(ValidationError, match="tenant_id"):
        TENANT_CALLS[call](tenant_id)
    assert no_network == []
