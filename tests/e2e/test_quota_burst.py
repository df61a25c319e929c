"""Quotas across processes: many sockets of one user, spread over two server processes
(each with its own in-process worker) sharing dynalite, send async requests at once.
Exactly the quota is accepted; every other request gets QUOTA_EXCEEDED and is not
stored; once they are cancelled the user has room again on either server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from bench.stack import Environment, Stack, running_stack

pytestmark = pytest.mark.e2e

LIMIT = 20  # docs/protocol.md §5: active async requests per user
SOCKETS = 10
PER_SOCKET = 6
LONG = {"duration_s": 120, "steps": 4, "max_requests": 0, "include_connections": False}


@pytest.fixture(scope="module")
def stack(e2e: Environment) -> Iterator[Stack]:
    with running_stack(e2e, "quota", servers=2) as running:
        yield running


async def test_quota_burst_from_two_server_processes_never_exceeds_the_limit(
    stack: Stack, measurements: dict[str, str]
) -> None:
    ids = [[f"burst-{s}-{i}" for i in range(PER_SOCKET)] for s in range(SOCKETS)]
    async with contextlib.AsyncExitStack() as exits:
        clients = [
            await exits.enter_async_context(stack.client("burst", server=s % 2))
            for s in range(SOCKETS)
        ]

        async def fire(client, request_ids: list[str]) -> list[dict]:
            sent = [
                client.send({"action": "generate_report", "id": r, "payload": LONG})
                for r in request_ids
            ]
            await asyncio.gather(*sent)
            return [
                await client.wait_for(
                    lambda f, r=r: (
                        f.get("request_id") == r and f["type"] in ("acknowledgment", "error")
                    ),
                    within=30,
                    what=f"the answer to {r}",
                )
                for r in request_ids
            ]

        answers = [
            a
            for per_client in await asyncio.gather(
                *(fire(c, r) for c, r in zip(clients, ids, strict=True))
            )
            for a in per_client
        ]
        accepted = [a["request_id"] for a in answers if a["type"] == "acknowledgment"]
        refused = [a for a in answers if a["type"] == "error"]
        attempted = SOCKETS * PER_SOCKET
        print(f"\nquota burst: attempted {attempted}, accepted {len(accepted)} (limit {LIMIT})")
        measurements["quota burst: 10 sockets, 2 server processes, 1 user"] = (
            f"attempted {attempted}, accepted {len(accepted)}, limit {LIMIT}, "
            f"QUOTA_EXCEEDED {len(refused)}"
        )
        assert len(accepted) == LIMIT
        assert len(refused) == attempted - LIMIT
        for error in refused:
            assert error["error"]["code"] == "QUOTA_EXCEEDED", error
            assert error["error"]["retryable"] is True
            assert error["error"]["details"] == {"scope": "user", "limit": LIMIT}

        # What is stored is exactly what was acknowledged, still active.
        listed = await clients[0].call("request.list", {"limit": 100})
        records = listed["data"]["requests"]
        assert sorted(r["request_id"] for r in records) == sorted(accepted)
        assert {r["status"] for r in records} <= {"PENDING", "PROCESSING"}

        for request_id in accepted:  # from the other server than the one that took it
            cancelled = await clients[1].call("request.cancel", {"request_id": request_id})
            assert cancelled["data"]["status"] == "CANCELLED", cancelled
        again = await clients[0].submit("after-cancel", LONG)
        assert again["type"] == "acknowledgment", again
        await clients[1].call("request.cancel", {"request_id": "after-cancel"})
