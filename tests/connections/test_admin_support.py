"""Small helpers of the live admin pages."""

from __future__ import annotations

import pytest

from connections import admin_support
from connections.models import Tenant

pytestmark = pytest.mark.usefixtures("admin_state")


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, ""),
        (-5, "0 ms"),
        (0, "0 ms"),
        (999, "999 ms"),
        (1000, "1.0 s"),
        (12_345, "12.3 s"),
        (60_000, "1 min 0 s"),
        (3_599_000, "59 min 59 s"),
        (3_600_000, "1 h 0 min"),
        (86_399_000, "23 h 59 min"),
        (90_000_000, "1 d 1 h"),
    ],
)
def test_format_duration(ms: int | None, text: str) -> None:
    assert admin_support.format_duration(ms) == text


@pytest.mark.parametrize(
    ("ms", "now", "text"),
    [(None, 0, ""), (1000, 3000, "2.0 s ago"), (5000, 3000, "in 2.0 s"), (3000, 3000, "0 ms ago")],
)
def test_format_age(ms: int | None, now: int, text: str) -> None:
    assert admin_support.format_age(ms, now) == text


@pytest.mark.parametrize(
    ("ms", "text"),
    [(None, ""), (0, "1970-01-01 00:00:00 UTC"), (1_700_000_000_000, "2023-11-14 22:13:20 UTC")],
)
def test_format_ms(ms: int | None, text: str) -> None:
    assert admin_support.format_ms(ms) == text


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({}, ""),
        ({"a": "", "b": None}, ""),
        ({"tenant": "acme", "user": ""}, "?tenant=acme"),
        ({"tenant": "a b", "cursor": "x=y&z"}, "?tenant=a+b&cursor=x%3Dy%26z"),
    ],
)
def test_query_string(params: dict[str, object], text: str) -> None:
    assert admin_support.query_string(**params) == text


@pytest.mark.django_db
def test_tenant_choices_always_include_the_selected_one() -> None:
    Tenant.objects.create(id="acme", name="Acme")
    Tenant.objects.create(id="zeta")
    assert admin_support.tenant_choices() == [("acme", "acme — Acme"), ("zeta", "zeta")]
    assert admin_support.tenant_choices("ghost", limit=1) == [
        ("ghost", "ghost"),
        ("acme", "acme — Acme"),
    ]
    assert admin_support.tenant_choices("acme") == [("acme", "acme — Acme"), ("zeta", "zeta")]


def test_run_awaits_a_coroutine() -> None:
    async def answer() -> int:
        return 42

    assert admin_support.run(answer()) == 42


def test_message_frame() -> None:
    frame = admin_support.message_frame("hi")
    assert frame["type"] == "message" and frame["text"] == "hi" and frame["timestamp"] > 0
