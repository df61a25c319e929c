"""QUOTA_EXCEEDED over a real socket (docs/protocol.md §4, §5 1.1): active async requests per
user and per tenant, nothing stored when refused, room again once a request ends."""

from __future__ import annotations

import pytest

from connections.models import Tenant
from storage.requests import RequestKey, request_store
from tests.support.sockets import Client, connected, make_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("asgi_settings")]

REPORT = {"duration_s": 60}


async def send_reports(client: Client, prefix: str, count: int) -> list[dict]:
    return [
        await client.request("generate_report", REPORT, id=f"{prefix}{i}") for i in range(count)
    ]


def assert_quota_exceeded(frame: dict, request_id: str, scope: str, limit: int) -> None:
    assert frame["type"] == "error", frame
    assert frame["request_id"] == request_id
    assert frame["error"]["code"] == "QUOTA_EXCEEDED"
    assert frame["error"]["retryable"] is True
    assert frame["error"]["details"] == {"scope": scope, "limit": limit}


async def assert_not_stored(client: Client, request_id: str) -> None:
    reply = await client.request("request.status", {"request_id": request_id, "subscribe": False})
    assert reply["type"] == "error" and reply["error"]["code"] == "NOT_FOUND", reply


async def test_the_21st_active_request_of_a_user_is_refused_and_not_stored(live) -> None:
    async with connected(make_token("alice")) as client:
        replies = await send_reports(client, "r", 21)
        assert [f["type"] for f in replies[:20]] == ["acknowledgment"] * 20
        assert_quota_exceeded(replies[20], "r20", "user", 20)
        await assert_not_stored(client, "r20")
    async with connected(make_token("bob")) as other:  # another user of the tenant is free
        assert (await other.request("generate_report", REPORT, id="b"))["type"] == (
            "acknowledgment"
        )


async def test_the_tenants_own_limit_applies_across_its_users(live) -> None:
    await Tenant.objects.acreate(id="small", max_active_requests=3)
    sent = 0
    for user in ("alice", "bob"):
        async with connected(make_token(user, "small")) as client:
            for reply in await send_reports(client, user, 2):
                sent += reply["type"] == "acknowledgment"
    assert sent == 3
    async with connected(make_token("carol", "small")) as client:
        assert_quota_exceeded(
            await client.request("generate_report", REPORT, id="c"), "c", "tenant", 3
        )
        await assert_not_stored(client, "c")


async def test_a_tenants_own_per_user_limit(live) -> None:
    await Tenant.objects.acreate(id="strict", max_active_requests_per_user=1)
    async with connected(make_token("alice", "strict")) as client:
        first, second = await send_reports(client, "r", 2)
        assert first["type"] == "acknowledgment"
        assert_quota_exceeded(second, "r1", "user", 1)


@pytest.mark.parametrize("ending", ["cancel", "complete", "fail"])
async def test_a_request_that_ends_makes_room(live, ending: str) -> None:
    await Tenant.objects.acreate(id="one", max_active_requests_per_user=1)
    async with connected(make_token("alice", "one")) as client:
        assert (await client.request("generate_report", REPORT, id="a"))["type"] == (
            "acknowledgment"
        )
        assert_quota_exceeded(
            await client.request("generate_report", REPORT, id="b"), "b", "user", 1
        )
        key = RequestKey("one", "alice", "a")
        if ending == "cancel":
            cancelled = await client.data("request.cancel", {"request_id": "a"})
            assert cancelled["status"] == "CANCELLED"
            assert (await client.recv())["error"]["code"] == "CANCELLED"  # its terminal frame
        else:
            assert request_store.claim(key, "w", 30_000) is not None
            if ending == "complete":
                request_store.complete(key, {"ok": True}, worker_id="w")
            else:
                request_store.fail(key, "PROCESSING_FAILED", "boom", worker_id="w")
        assert (await client.request("generate_report", REPORT, id="b"))["type"] == (
            "acknowledgment"
        )


async def test_sync_actions_are_not_counted(live) -> None:
    await Tenant.objects.acreate(id="one", max_active_requests_per_user=1)
    async with connected(make_token("alice", "one")) as client:
        assert (await client.request("generate_report", REPORT, id="a"))["type"] == (
            "acknowledgment"
        )
        for i in range(3):
            assert (await client.data("echo", {"i": i})) == {"echo": {"i": i}}
            listed = await client.data("request.list", {})
            assert [r["request_id"] for r in listed["requests"]] == ["a"]
