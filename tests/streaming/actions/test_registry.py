"""Declaring actions: the registry, schemas, retry policy."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from protocol.errors import ErrorCode, ProtocolError
from streaming.actions import registry as default_registry
from streaming.actions.registry import (
    ActionRegistry,
    ActionSpec,
    FinalError,
    RetryableError,
    action,
)

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")


class Resize(BaseModel):
    url: str
    width: int = Field(default=640, ge=1)


def test_the_decorator_registers_and_returns_the_handler() -> None:
    actions = ActionRegistry()

    def resize(job: Any, payload: Resize) -> dict[str, bool]:
        return {"ok": True}

    decorated = action(
        "images.resize",
        mode="async",
        schema=Resize,
        permission="images",
        timeout_s=120,
        max_attempts=5,
        retry_on=(ConnectionError,),
        registry=actions,
    )(resize)
    assert decorated is resize
    spec = actions.get("images.resize")
    assert spec == ActionSpec(
        "images.resize", resize, "async", Resize, "images", 120, 5, (ConnectionError,)
    )
    assert actions.names() == ["images.resize"]
    assert "images.resize" not in default_registry.names()  # a separate registry


def test_defaults_of_an_action() -> None:
    actions = ActionRegistry()

    @action("plain", registry=actions)
    def plain(ctx: Any, payload: dict[str, Any]) -> None:
        return None

    spec = actions.get("plain")
    assert (spec.mode, spec.schema, spec.permission) == ("sync", None, None)
    assert (spec.timeout_s, spec.max_attempts, spec.retry_on) == (60.0, 3, ())


def test_names_are_sorted_and_unregister_forgets() -> None:
    actions = ActionRegistry()
    for name in ("b.two", "a.one", "c.three"):
        action(name, registry=actions)(lambda ctx, payload: None)
    assert actions.names() == ["a.one", "b.two", "c.three"]
    actions.unregister("b.two")
    actions.unregister("never-there")
    assert actions.names() == ["a.one", "c.three"]


def test_a_name_can_be_declared_once() -> None:
    actions = ActionRegistry()
    action("dup", registry=actions)(lambda ctx, payload: None)
    with pytest.raises(ValueError, match="already registered"):
        action("dup", registry=actions)(lambda ctx, payload: None)


@pytest.mark.parametrize(("max_attempts", "timeout_s"), [(0, 60.0), (-1, 60.0), (3, 0), (3, -5)])
def test_limits_must_be_positive(max_attempts: int, timeout_s: float) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        action("bad", max_attempts=max_attempts, timeout_s=timeout_s, registry=ActionRegistry())(
            lambda ctx, payload: None
        )


def test_an_unknown_action_is_invalid_action() -> None:
    with pytest.raises(ProtocolError) as info:
        ActionRegistry().get("nope")
    assert info.value.code is ErrorCode.INVALID_ACTION
    assert info.value.details == {"action": "nope"}


def test_is_coroutine_tells_async_handlers_apart() -> None:
    async def a(ctx: Any, payload: Any) -> None:
        return None

    def s(ctx: Any, payload: Any) -> None:
        return None

    assert ActionSpec("a", a).is_coroutine
    assert not ActionSpec("s", s).is_coroutine


def test_without_a_schema_the_payload_passes_through() -> None:
    payload = {"anything": [1, 2]}
    assert ActionSpec("x", print).validate(payload) is payload


def test_a_schema_parses_the_payload() -> None:
    parsed = ActionSpec("x", print, schema=Resize).validate({"url": "u", "width": "10"})
    assert parsed == Resize(url="u", width=10)


def test_a_schema_reports_every_failing_field_at_once() -> None:
    with pytest.raises(ProtocolError) as info:
        ActionSpec("x", print, schema=Resize).validate({"width": -12345})
    assert info.value.code is ErrorCode.VALIDATION_ERROR
    errors = info.value.details["errors"]
    assert sorted(e["field"] for e in errors) == ["payload.url", "payload.width"]
    assert all(isinstance(e["message"], str) and e["message"] for e in errors)
    assert "12345" not in str(errors)  # the client's input is not echoed back


@pytest.mark.parametrize(
    ("retry_on", "exc", "retryable"),
    [
        ((), RetryableError("x"), True),
        ((), ConnectionError(), False),
        ((), FinalError("x"), False),
        ((ConnectionError,), ConnectionResetError(), True),  # subclasses count
        ((ConnectionError,), ValueError(), False),
        ((ConnectionError, TimeoutError), TimeoutError(), True),
        ((KeyError,), RetryableError("x"), True),  # RetryableError always retries
    ],
)
def test_which_failures_are_retryable(
    retry_on: tuple[type[BaseException], ...], exc: BaseException, retryable: bool
) -> None:
    assert ActionSpec("x", print, retry_on=retry_on).is_retryable(exc) is retryable


# --- registering and validating -------------------------------------------------------


class Sized(BaseModel):
    width: int
    height: int = 1


def test_register_and_lookup() -> None:
    local = ActionRegistry()

    @action("img.resize", mode="async", schema=Sized, retry_on=(ConnectionError,), registry=local)
    def resize(job, payload):
        return payload.width

    spec = local.get("img.resize")
    assert spec.handler is resize and spec.mode == "async" and not spec.is_coroutine
    assert local.names() == ["img.resize"]
    assert spec.validate({"width": 3}).width == 3
    assert spec.is_retryable(ConnectionError()) and spec.is_retryable(RetryableError())
    assert not spec.is_retryable(ValueError())
    local.unregister("img.resize")
    local.unregister("img.resize")  # idempotent
    with pytest.raises(ProtocolError) as info:
        local.get("img.resize")
    assert info.value.code.value == "INVALID_ACTION"


def test_validation_lists_every_field() -> None:
    spec = ActionSpec("x", lambda ctx, p: p, schema=Sized)
    with pytest.raises(ProtocolError) as info:
        spec.validate({"width": "wide", "height": "tall"})
    fields = [e["field"] for e in info.value.details["errors"]]
    assert fields == ["payload.width", "payload.height"]
    assert ActionSpec("y", lambda ctx, p: p).validate({"any": 1}) == {"any": 1}


@pytest.mark.parametrize(
    "spec",
    [
        ActionSpec("dup", lambda: None),
        ActionSpec("z", lambda: None, max_attempts=0),
        ActionSpec("z", lambda: None, timeout_s=0),
    ],
)
def test_register_rejects(spec) -> None:
    local = ActionRegistry()
    local.register(ActionSpec("dup", lambda: None))
    with pytest.raises(ValueError):
        local.register(spec)
