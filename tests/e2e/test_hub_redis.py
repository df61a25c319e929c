"""The fan-out hub across two real server processes sharing Redis: a frame to a tenant
or a user, published through one server's HTTP API, reaches every socket of that
audience on both servers exactly once and in the publisher's order, and never a socket
of another tenant (``connections/hub.py``, docs/hub.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from bench.fanout import issue_api_key, post_publish
from bench.stack import Environment, Stack, running_stack
from bench.wsclient import WSClient

pytestmark = pytest.mark.e2e

USERS = ("alice", "bob")
PER_USER_AND_SERVER = 3


@pytest.fixture(scope="module")
def stack(e2e: Environment) -> Iterator[Stack]:
    with running_stack(e2e, "hub", redis=True, servers=2, server_worker=False) as running:
        yield running


@pytest.fixture(scope="module")
def api_key(stack: Stack) -> str:
    return issue_api_key(stack, "demo")


def publish(stack: Stack, server: int, key: str, body: dict[str, Any]) -> dict[str, Any]:
    return post_publish(stack.servers[server], key, body)


def notices(client: WSClient) -> list[tuple[str, int]]:
    return [(f["to"], f["n"]) for f in client.frames if f["type"] == "notice"]


@pytest.mark.parametrize("publisher", [0, 1])
async def test_frames_reach_every_socket_of_both_servers_once_in_order(
    stack: Stack, api_key: str, publisher: int
) -> None:
    frames = 40
    # Frame n goes to the tenant, except every fourth, which goes to one user.
    audience = {
        n: ("user", USERS[n // 4 % 2]) if n % 4 == 3 else ("tenant", "") for n in range(frames)
    }
    async with contextlib.AsyncExitStack() as exits:
        sockets: list[tuple[int, str, WSClient]] = []
        for server in (0, 1):
            for user in USERS:
                for _ in range(PER_USER_AND_SERVER):
                    client = await exits.enter_async_context(stack.client(user, server=server))
                    sockets.append((server, user, client))
        outsiders = [
            await exits.enter_async_context(stack.client("alice", "other", server=s))
            for s in (0, 1)
        ]
        per_server = len(USERS) * PER_USER_AND_SERVER

        answers = []
        for n in range(frames):
            kind, user = audience[n]
            body: dict[str, Any] = {"frame": {"type": "notice", "to": kind, "n": n}}
            if kind == "user":
                body["user_id"] = stack.user(user)
            answers.append(await asyncio.to_thread(publish, stack, publisher, api_key, body))

        for n, answer in enumerate(answers):
            kind, _ = audience[n]
            local = per_server if kind == "tenant" else PER_USER_AND_SERVER
            assert answer == {"delivered": local, "gone": 0, "failed": 0, "relayed": True}

        # A last frame to the tenant: a duplicate or a stray frame would come before it.
        marker = {"frame": {"type": "notice", "to": "end", "n": frames}}
        assert (await asyncio.to_thread(publish, stack, publisher, api_key, marker))["relayed"]
        for server, user, client in sockets:
            await client.wait_for(lambda f: f.get("to") == "end", within=20, what="the last frame")
            expected = [(k, n) for n, (k, u) in audience.items() if k == "tenant" or u == user]
            assert notices(client) == [*expected, ("end", frames)], f"server {server}, {user}"
        for outsider in outsiders:
            assert [f for f in outsider.frames if f["type"] == "notice"] == []
