"""issue_token, through call_command: the token it prints verifies."""

from __future__ import annotations

import pytest
from django.core.management import CommandError

from streaming.auth import Identity, verify_token
from tests.support.commands import stdout_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("asgi_settings")]


def test_issue_token_verifies() -> None:
    token = stdout_of(
        "issue_token",
        "--tenant",
        "acme",
        "--user",
        "alice",
        "--permissions",
        "a, b,,",
        "--ttl",
        "60",
    ).strip()
    assert verify_token(token) == Identity("acme", "alice", frozenset({"a", "b"}))


@pytest.mark.parametrize("ttl", ["0", "-5", "soon"])
def test_issue_token_bad_ttl(ttl) -> None:
    with pytest.raises(CommandError):
        stdout_of("issue_token", "--tenant", "acme", "--user", "alice", "--ttl", ttl)


def test_issue_token_requires_tenant_and_user() -> None:
    with pytest.raises(CommandError):
        stdout_of("issue_token", "--tenant", "acme")


def test_issue_token_without_secret(settings) -> None:
    settings.STREAMER_JWT_SECRET = ""
    with pytest.raises(CommandError) as info:
        stdout_of("issue_token", "--tenant", "acme", "--user", "alice")
    assert "STREAMER_JWT_SECRET" in str(info.value)
