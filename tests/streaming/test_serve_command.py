"""``manage.py serve --server``: each name runs its server (the default is the one
docs/performance.md chose); a name it does not know is refused with the choices, before
anything starts. The servers themselves run in tests/e2e/test_serve_servers.py."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from streaming.management.commands import serve


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """The servers ``serve`` ran, with their options (runners replaced by a recorder)."""
    runs: list[tuple[str, dict[str, Any]]] = []
    for name in list(serve.SERVERS):

        def record(launch: serve.Launch, name: str = name) -> None:
            runs.append((name, launch.options))

        monkeypatch.setitem(serve.SERVERS, name, record)
    return runs


@pytest.mark.parametrize(
    ("args", "server"),
    [
        ([], "uvicorn"),
        (["--server", "uvicorn"], "uvicorn"),
        (["--server", "daphne"], "daphne"),
        (["--server", "granian"], "granian"),
        (["--server=daphne", "--port", "9001"], "daphne"),
    ],
)
def test_each_server_name_runs_that_server(
    started: list[tuple[str, dict[str, Any]]], args: list[str], server: str
) -> None:
    call_command("serve", "--no-worker", *args)
    assert [name for name, _ in started] == [server]
    assert started[0][1]["server"] == server
    assert serve.DEFAULT_SERVER == "uvicorn"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "tornado"], "invalid choice: 'tornado'"),
        (["--server", ""], "invalid choice: ''"),
        (["--server", "DAPHNE"], "invalid choice: 'DAPHNE'"),
        (["--server"], "expected one argument"),
    ],
)
def test_an_unknown_server_is_refused_with_the_choices(
    started: list[tuple[str, dict[str, Any]]], args: list[str], message: str
) -> None:
    with pytest.raises(CommandError) as refused:
        call_command("serve", "--no-worker", *args)
    assert message in str(refused.value)
    if "invalid choice" in message:
        assert "(choose from 'daphne', 'granian', 'uvicorn')" in str(refused.value)
    assert started == []
