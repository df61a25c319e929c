"""streamer_stats, through call_command."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from connections.models import Tenant
from storage import base, heartbeat
from storage.connection import ConnectionInfo, connection_store
from storage.errors import StorageUnavailable
from storage.requests.model import RequestRecord
from storage.requests.store import request_store
from streaming import stats as stats_module
from tests.support.admin import key
from tests.support.commands import run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("admin_state")]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("streamer_stats", ["--json", "heartbeats"]),
    ],
)
def test_help(name: str, words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        call_command(name, "--help")
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in words:
        assert word in text


# --- streamer_stats ---------------------------------------------------------------------------


@pytest.fixture
def populated(
    tenant: Tenant, connect: Callable[..., ConnectionInfo], enqueue: Callable[..., RequestRecord]
) -> int:
    Tenant.objects.create(id="globex", max_connections=0, active=False)
    connect("c1")
    connect("c2")
    now = base.now_ms()
    enqueue("r1", now=now - 65_000)
    enqueue("r2")
    request_store.claim(key("r2"), "w1", 30_000)
    heartbeat.beat("host:1:aaa", started_at=now - 600_000, jobs=1)
    heartbeat.beat("host:2:bbb", started_at=now - 600_000, jobs=0, now=now - 60_000)
    return now


def test_stats_text(populated: int) -> None:
    out, err = run("streamer_stats")
    lines = out.splitlines()
    assert lines[0] == "Tenants: 2 (1 active)"
    assert "Connections per tenant:" in lines
    assert any(line.split() == ["acme", "2", "/", "3"] for line in lines)
    assert any(line.split() == ["globex", "0", "/", "unlimited", "(disabled)"] for line in lines)
    assert "  total: 2" in lines
    assert "Active requests: PENDING 1, RETRYING 0, PROCESSING 1" in lines
    assert any(
        line.startswith("Oldest pending request: acme/alice/r1 (PENDING) waiting 1 min")
        for line in lines
    )
    assert "Workers: 1 alive, 1 stale" in lines
    assert any("host:1:aaa  alive" in line and "jobs 1" in line for line in lines)
    assert any("host:2:bbb  STALE" in line for line in lines)
    assert err == ""


def test_stats_json(populated: int) -> None:
    out, _ = run("streamer_stats", "--json")
    data = orjson.loads(out)
    assert data["tenants"]["total"] == 2 and data["tenants"]["active"] == 1
    assert data["tenants"]["connections"] == {"acme": 2, "globex": 0}
    assert data["connections_total"] == 2
    assert data["requests"]["by_status"] == {"PENDING": 1, "RETRYING": 0, "PROCESSING": 1}
    assert data["requests"]["active"] == 2 and data["requests"]["capped"] is False
    assert data["requests"]["oldest_waiting"]["request_id"] == "r1"
    assert data["workers"]["alive"] == 1 and data["workers"]["stale"] == 1
    assert {w["worker_id"]: w["alive"] for w in data["workers"]["list"]} == {
        "host:1:aaa": True,
        "host:2:bbb": False,
    }
    assert data["errors"] == []


def test_stats_of_an_empty_system(moto_dynamodb: object) -> None:
    out, _ = run("streamer_stats")
    assert "  (no tenants)" in out and "none waiting" in out and "Workers: 0 alive, 0 stale" in out


def test_stats_marks_capped_and_uncounted(populated: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_module, "MAX_ACTIVE", 2)
    monkeypatch.setattr(stats_module, "MAX_COUNTED_TENANTS", 1)
    out, _ = run("streamer_stats")
    assert "Active requests: PENDING 1+, RETRYING 0+, PROCESSING 1+" in out
    assert "… only the first 1 tenants are counted" in out


def test_stats_fail_when_storage_is_down(populated: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: object, **kwargs: object) -> Any:
        raise StorageUnavailable("x")

    monkeypatch.setattr(request_store, "list_due", down)
    monkeypatch.setattr(heartbeat, "list_heartbeats", down)
    monkeypatch.setattr(connection_store, "count_by_tenant", down)
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="incomplete: some connection counts"):
        call_command("streamer_stats", stdout=out, stderr=err)
    text = out.getvalue()
    assert any(line.split() == ["acme", "?", "/", "3"] for line in text.splitlines())
    assert "Active requests: unavailable" in text and "Workers: unavailable" in text
    assert "Oldest pending request: unavailable" in text
    assert "error: active requests unavailable (storage)" in err.getvalue()
    with pytest.raises(CommandError):
        call_command("streamer_stats", "--json", stdout=StringIO(), stderr=StringIO())
