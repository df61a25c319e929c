"""Channels' per-message database clean-up (``close_old_connections``, a thread hop) is
skipped for connects, disconnects, frames the socket sends and frames pushed to it
(docs/performance.md, "Echo" and "Reconnect storms"); Django's database is cleaned up
where it is reached instead: around the tenant lookups of a connect and of
``auth.refresh``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import channels.consumer
import channels.db
import pytest

from connections.manager import manager
from connections.tenants import forget_tenant
from tests.support.sockets import Client, connected, make_token

pytestmark = pytest.mark.usefixtures("asgi_settings")


@pytest.fixture
def cleanups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Each clean-up: ``dispatch`` for Channels' per-message hop, or the name of the
    thread a ``database_sync_to_async`` call cleaned up on. (The clean-up itself is a
    no-op under channels.testing, which patches ``close_old_connections``.)"""
    calls: list[str] = []
    hop = channels.consumer.aclose_old_connections
    around = channels.db.DatabaseSyncToAsync.thread_handler

    async def counted_hop() -> None:
        calls.append("dispatch")
        await hop()

    def counted_around(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(threading.current_thread().name)
        return around(self, *args, **kwargs)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted_hop)
    monkeypatch.setattr(channels.db.DatabaseSyncToAsync, "thread_handler", counted_around)
    yield calls


async def _echo(client: Client) -> dict[str, Any]:
    return await client.request("echo", {"n": 1}, id="e1")


async def _ping(client: Client) -> dict[str, Any]:
    return await client.ask({"type": "ping"})


async def _not_json(client: Client) -> dict[str, Any]:
    return await client.ask("{nope")


async def _pushed(client: Client) -> dict[str, Any]:
    await manager.send_to_user("acme", "alice", {"type": "note", "n": 1})
    message = await client.comm.receive_output(5)
    return dict(json.loads(message["text"]))


@pytest.mark.parametrize(
    ("frame", "answer"),
    [(_echo, "response"), (_ping, "pong"), (_not_json, "error"), (_pushed, "note")],
)
async def test_frames_are_answered_without_the_clean_up_hop(
    live: Any, cleanups: list[str], frame: Any, answer: str
) -> None:
    async with connected() as client:
        after_connect = len(cleanups)
        for _ in range(3):
            assert (await frame(client))["type"] == answer
        assert len(cleanups) == after_connect


async def test_connect_and_disconnect_skip_the_hop_and_the_lookup_cleans_up(
    live: Any, cleanups: list[str]
) -> None:
    forget_tenant()  # the connect must look the tenant up in the database
    async with connected() as client:
        assert len(cleanups) == 1 and cleanups[0] != "dispatch", cleanups
        assert (await _echo(client))["type"] == "response"
    assert "dispatch" not in cleanups, cleanups


async def test_the_tenant_lookup_of_auth_refresh_cleans_up_around_itself(
    live: Any, cleanups: list[str]
) -> None:
    async with connected() as client:
        after_connect = len(cleanups)
        forget_tenant()  # connect cached the policy: the refresh must look it up again
        answer = await client.request("auth.refresh", {"token": make_token()}, id="r1")
        assert answer["type"] == "response", answer
        # no dispatch hop; the lookup cleans up on the thread that ran it
        lookup = cleanups[after_connect:]
        assert len(lookup) == 1 and lookup[0] != "dispatch", lookup
