"""cleanup_connections, through call_command."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from storage import base
from storage.connection import ConnectionInfo, connection_store
from storage.errors import NotFound, StorageUnavailable
from tests.support.commands import run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("admin_state")]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("cleanup_connections", ["--older-than", "--dry-run", "by_last_seen"]),
    ],
)
def test_help(name: str, words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        call_command(name, "--help")
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in words:
        assert word in text


# --- cleanup_connections --------------------------------------------------------------------


@pytest.fixture
def stale(connect: Callable[..., ConnectionInfo]) -> list[str]:
    """30 connections last seen two hours ago, and one fresh."""
    old = base.now_ms() - 2 * 3600 * 1000
    ids = [connect(f"old{i:02d}", connected_at=old, last_seen=old).connection_id for i in range(30)]
    connect("fresh")
    return ids


def test_cleanup_dry_run_counts_and_deletes_nothing(stale: list[str]) -> None:
    out, _ = run("cleanup_connections", "--older-than", "3600", "--dry-run")
    assert "Counting connections last seen more than 3600 s ago" in out
    assert "would delete" in out and "so far" in out
    assert out.strip().endswith("Dry run: 30 stale connections would be deleted.")
    assert connection_store.get("old00")


def test_cleanup_deletes_stale_connections_with_progress(stale: list[str]) -> None:
    out, _ = run("cleanup_connections", "--older-than", "3600")
    lines = out.strip().splitlines()
    assert lines[0] == "Deleting connections last seen more than 3600 s ago…"
    progress = [line for line in lines if "so far" in line]
    assert progress and progress[-1] == "  … deleted 30 so far"
    assert lines[-1] == "Deleted 30 stale connections."
    for connection_id in stale:
        with pytest.raises(NotFound):
            connection_store.get(connection_id)
    assert connection_store.get("fresh")
    # Idempotent: nothing left to delete.
    assert (
        run("cleanup_connections", "--older-than", "3600")[0]
        .strip()
        .endswith("Deleted 0 stale connections.")
    )


def test_cleanup_default_age_keeps_recent_connections(stale: list[str]) -> None:
    out, _ = run("cleanup_connections")
    assert "more than 86400 s ago" in out and out.strip().endswith("Deleted 0 stale connections.")


def test_cleanup_singular(connect: Callable[..., ConnectionInfo]) -> None:
    old = base.now_ms() - 10_000
    connect("one", connected_at=old, last_seen=old)
    assert (
        run("cleanup_connections", "--older-than", "5")[0]
        .strip()
        .endswith("Deleted 1 stale connection.")
    )


@pytest.mark.parametrize("value", ["0", "-5"])
def test_cleanup_refuses_a_bad_age(value: str) -> None:
    with pytest.raises(CommandError, match="positive"):
        run("cleanup_connections", "--older-than", value)


def test_cleanup_fails_when_storage_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: object, **kwargs: object) -> int:
        raise StorageUnavailable("storage unavailable during connection.delete_stale")

    monkeypatch.setattr(connection_store, "delete_stale", down)
    with pytest.raises(CommandError, match="storage error: storage unavailable"):
        run("cleanup_connections")
