"""The built-in actions over a real socket (docs/protocol.md §3)."""

from __future__ import annotations

import base64
import json

import botocore.client
import pytest

from connections.manager import manager
from protocol import frames
from protocol.errors import ErrorCode
from storage.requests import RequestKey, RequestStatus, request_store
from storage.subscription import subscription_store
from tests.support.sockets import connected, make_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("asgi_settings")]

ALICE = make_token("alice")
PUBLIC_KEYS = {
    "request_id",
    "action",
    "status",
    "percentage",
    "message",
    "created_at",
    "started_at",
    "ended_at",
}


def error_code(frame: dict) -> str:
    assert frame["type"] == "error", frame
    return frame["error"]["code"]


def key(request_id: str, user: str = "alice", tenant: str = "acme") -> RequestKey:
    return RequestKey(tenant, user, request_id)


def store_request(request_id: str, *, user="alice", tenant="acme", action="job.x", now=None):
    return request_store.enqueue(
        tenant_id=tenant,
        user_id=user,
        request_id=request_id,
        action=action,
        payload={},
        now=now,
    )


def finish(request_id: str, status: RequestStatus, *, user="alice", result=None):
    k = key(request_id, user)
    if status is RequestStatus.CANCELLED:
        return request_store.cancel(k)
    if status is RequestStatus.PENDING:
        return request_store.get(k)
    claimed = request_store.claim(k, "w1", 30_000)
    assert claimed is not None
    if status is RequestStatus.COMPLETED:
        return request_store.complete(k, result if result is not None else {"ok": True})
    if status is RequestStatus.FAILED:
        return request_store.fail(k, "PROCESSING_FAILED", "Broken")
    if status is RequestStatus.RETRYING:
        return request_store.schedule_retry(k, 10**13, "TIMEOUT", "slow")
    return claimed


# --- echo -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [{}, {"a": 1}, {"nested": {"list": [1, "two", None, True, 2.5]}}, {"unicode": "héllo ✓"}],
)
async def test_echo_touches_no_storage(live, monkeypatch, payload) -> None:
    async with connected(ALICE) as client:
        calls: list[str] = []
        real = botocore.client.BaseClient._make_api_call

        def counting(self, operation, params):
            calls.append(operation)
            return real(self, operation, params)

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
        reply = await client.request("echo", payload, id="e1")
        monkeypatch.undo()
        assert reply["type"] == "response"
        assert reply["success"] is True
        assert reply["request_id"] == "e1"
        assert reply["data"] == {"echo": payload}
        assert calls == [], "echo must not reach DynamoDB"


@pytest.mark.parametrize(
    ("metadata", "echoed"),
    [({"trace": "abc", "n": [1, 2]}, True), ({}, True), (None, False)],
)
async def test_metadata_echoed_in_response(live, metadata, echoed) -> None:
    async with connected(ALICE) as client:
        frame = {"id": "m1", "action": "echo", "payload": {"x": 1}}
        if metadata is not None:
            frame["metadata"] = metadata
        reply = await client.ask(frame)
        assert reply["type"] == "response"
        if echoed:
            assert reply["metadata"] == metadata
        else:
            assert "metadata" not in reply


# --- async actions --------------------------------------------------------------------


async def test_async_action_is_stored_then_acknowledged(live) -> None:
    async with connected(ALICE) as client:
        ack = await client.request(
            "generate_report", {"duration_s": 1}, id="rep-1", metadata={"ui": "tab-3"}
        )
        assert ack["type"] == "acknowledgment"
        assert ack["request_id"] == "rep-1"
        assert ack["status"] == "queued"
        assert isinstance(ack["message"], str)
        record = request_store.get(key("rep-1"))
        assert record.status is RequestStatus.PENDING
        assert record.action == "generate_report"
        assert record.payload == {"duration_s": 1}
        assert record.metadata == {"ui": "tab-3"}
        assert record.connection_id, "the sender's socket is remembered for the answer"
        assert record.origin_transport == "channels"


async def test_owner_comes_from_token_not_metadata(live) -> None:
    async with connected(ALICE) as client:
        spoof = {"user_id": "bob", "tenant_id": "globex", "sub": "bob"}
        ack = await client.request("generate_report", {}, id="who", metadata=spoof)
        assert ack["type"] == "acknowledgment"
        record = request_store.get(key("who"))
        assert (record.tenant_id, record.user_id) == ("acme", "alice")
        assert request_store.list_by_user("globex", "bob").items == []
        assert request_store.list_by_user("acme", "bob").items == []


async def test_async_action_generated_id(live) -> None:
    async with connected(ALICE) as client:
        ack = await client.request("generate_report", {})
        assert ack["type"] == "acknowledgment"
        assert request_store.get(key(ack["request_id"])).status is RequestStatus.PENDING


async def test_duplicate_request_scoped_to_user(live) -> None:
    async with connected(ALICE) as alice, connected(make_token("bob")) as bob:
        assert (await alice.request("generate_report", {}, id="dup"))["type"] == "acknowledgment"
        again = await alice.request("generate_report", {"duration_s": 9}, id="dup")
        assert error_code(again) == "DUPLICATE_REQUEST"
        assert again["request_id"] == "dup"
        assert again["error"]["details"] == {"status": "PENDING"}
        assert again["error"]["retryable"] is False
        # nothing new was queued, nothing was overwritten
        assert request_store.get(key("dup")).payload == {}
        assert len(request_store.list_by_user("acme", "alice").items) == 1
        # another user may use the same id
        assert (await bob.request("generate_report", {}, id="dup"))["type"] == "acknowledgment"
        assert request_store.get(key("dup", "bob")).status is RequestStatus.PENDING


async def test_duplicate_reports_current_status(live) -> None:
    store_request("done")
    finish("done", RequestStatus.COMPLETED)
    async with connected(ALICE) as client:
        reply = await client.request("generate_report", {}, id="done")
        assert error_code(reply) == "DUPLICATE_REQUEST"
        assert reply["error"]["details"] == {"status": "COMPLETED"}


async def test_same_id_in_other_tenant_does_not_clash(live) -> None:
    async with connected(ALICE) as acme, connected(make_token("alice", "globex")) as globex:
        assert (await acme.request("generate_report", {}, id="x"))["type"] == "acknowledgment"
        assert (await globex.request("generate_report", {}, id="x"))["type"] == "acknowledgment"


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"duration_s": -1}, {"payload.duration_s"}),
        ({"duration_s": 600.5}, {"payload.duration_s"}),
        ({"duration_s": "slow"}, {"payload.duration_s"}),
        ({"bogus": 1}, {"payload.bogus"}),
        (
            {"duration_s": 1000, "steps": 0, "extra": True},
            {"payload.duration_s", "payload.steps", "payload.extra"},
        ),
    ],
)
async def test_async_payload_validated_before_storing(live, payload, fields) -> None:
    async with connected(ALICE) as client:
        reply = await client.request("generate_report", payload, id="bad")
        assert error_code(reply) == "VALIDATION_ERROR"
        assert reply["request_id"] == "bad"
        assert {e["field"] for e in reply["error"]["details"]["errors"]} == fields
        assert request_store.list_by_user("acme", "alice").items == []


async def test_storage_down_during_enqueue(live, unreachable_storage) -> None:
    async with connected(ALICE) as client:
        unreachable_storage()
        reply = await client.request("generate_report", {}, id="down")
        assert error_code(reply) == "SERVICE_UNAVAILABLE"
        assert reply["request_id"] == "down"
        assert reply["error"]["retryable"] is True
        assert (await client.ask({"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        ("request.status", {"request_id": "r"}),
        ("request.status", {"request_id": "r", "subscribe": False}),
        ("request.cancel", {"request_id": "r"}),
        ("request.list", {}),
    ],
)
async def test_storage_down_during_sync_actions(live, unreachable_storage, action, payload) -> None:
    async with connected(ALICE) as client:
        unreachable_storage()
        reply = await client.request(action, payload, id="q")
        assert error_code(reply) == "SERVICE_UNAVAILABLE"
        assert reply["request_id"] == "q"


# --- request.status -------------------------------------------------------------------


async def test_status_of_own_request(live) -> None:
    async with connected(ALICE) as client:
        await client.request("generate_report", {}, id="s1")
        data = await client.data("request.status", {"request_id": "s1", "subscribe": False})
        assert set(data) == PUBLIC_KEYS
        assert data["request_id"] == "s1"
        assert data["action"] == "generate_report"
        assert data["status"] == "PENDING"
        assert data["percentage"] == 0
        assert data["message"] == ""
        assert isinstance(data["created_at"], int)
        assert data["started_at"] is None and data["ended_at"] is None
        assert subscription_store.list_by_request(key("s1").as_string()) == []


@pytest.mark.parametrize(
    ("status", "extra"),
    [
        (RequestStatus.COMPLETED, {"result": {"rows": 3}}),
        (RequestStatus.FAILED, {"error": {"code": "PROCESSING_FAILED", "message": "Broken"}}),
        (RequestStatus.CANCELLED, {"error": {"code": "CANCELLED", "message": "Request cancelled"}}),
        (RequestStatus.PROCESSING, {}),
        (RequestStatus.RETRYING, {}),
    ],
)
async def test_status_public_record_by_state(live, status, extra) -> None:
    store_request("p1")
    finish("p1", status, result={"rows": 3})
    async with connected(ALICE) as client:
        data = await client.data("request.status", {"request_id": "p1"})
        assert data["status"] == status.value
        assert set(data) == PUBLIC_KEYS | set(extra)
        for name, value in extra.items():
            assert data[name] == value
        if status in (RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED):
            assert isinstance(data["ended_at"], int)


@pytest.mark.parametrize(
    ("owner_user", "owner_tenant"),
    [("bob", "acme"), ("alice", "globex"), (None, None)],
)
@pytest.mark.parametrize("subscribe", [True, False])
async def test_status_of_someone_elses_request_is_not_found(
    live, owner_user, owner_tenant, subscribe
) -> None:
    if owner_user is not None:
        store_request("theirs", user=owner_user, tenant=owner_tenant)
    async with connected(ALICE) as client:
        reply = await client.request(
            "request.status", {"request_id": "theirs", "subscribe": subscribe}, id="q1"
        )
        assert error_code(reply) == "NOT_FOUND"
        assert reply["request_id"] == "q1"
        # a failed lookup leaves no subscription behind
        assert subscription_store.list_by_request(key("theirs").as_string()) == []
        if owner_user is not None:
            theirs = key("theirs", owner_user, owner_tenant).as_string()
            assert subscription_store.list_by_request(theirs) == []


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({}, {"payload.request_id"}),
        ({"request_id": ""}, {"payload.request_id"}),
        ({"request_id": "x" * 129}, {"payload.request_id"}),
        ({"request_id": 5}, {"payload.request_id"}),
        ({"request_id": "x", "subscribe": "maybe"}, {"payload.subscribe"}),
    ],
)
async def test_status_payload_validation(live, payload, fields) -> None:
    async with connected(ALICE) as client:
        reply = await client.request("request.status", payload)
        assert error_code(reply) == "VALIDATION_ERROR"
        assert {e["field"] for e in reply["error"]["details"]["errors"]} == fields


async def test_subscribe_receives_pushed_frames_then_nothing_after_terminal(live) -> None:
    async with connected(ALICE) as sender, connected(ALICE) as watcher:
        await sender.request("generate_report", {}, id="sub1")
        data = await watcher.data("request.status", {"request_id": "sub1"})
        assert data["status"] == "PENDING"
        request_key = key("sub1").as_string()
        subs = subscription_store.list_by_request(request_key)
        assert len(subs) == 1 and subs[0].transport == "channels"

        await manager.send_to_request(request_key, frames.progress("sub1", 10, "a tenth"))
        frame = await watcher.recv()
        assert (frame["type"], frame["request_id"], frame["percentage"]) == ("progress", "sub1", 10)
        assert frame["message"] == "a tenth"
        # the sender is not subscribed and no origin was given
        assert await sender.silent(0.05)

        await manager.send_to_request(request_key, frames.progress("sub1", 5, "older"))
        assert await watcher.silent(0.1), "progress never goes down"
        await manager.send_to_request(request_key, frames.progress("sub1", 10, "same"))
        assert (await watcher.recv())["percentage"] == 10

        await manager.send_to_request(request_key, frames.complete("sub1", {"n": 1}), fresh=True)
        done = await watcher.recv()
        assert (done["type"], done["result"], done["success"]) == ("complete", {"n": 1}, True)

        await manager.send_to_request(request_key, frames.error("sub1", "TIMEOUT"))
        await manager.send_to_request(request_key, frames.progress("sub1", 100))
        await manager.send_to_request(request_key, frames.complete("sub1", {}))
        assert await watcher.silent(0.15), "nothing after the terminal frame"


async def test_send_to_request_reaches_origin_once(live) -> None:
    async with connected(ALICE) as client:
        await client.request("generate_report", {}, id="o1")
        await client.data("request.status", {"request_id": "o1"})  # subscribed as well
        record = request_store.get(key("o1"))
        from streaming.lifecycle import origin_of

        origin = origin_of(record)
        assert origin is not None and origin.connection_id == record.connection_id
        report = await manager.send_to_request(
            key("o1").as_string(), frames.progress("o1", 50), origin=origin
        )
        assert report.delivered == 1
        assert (await client.recv())["percentage"] == 50
        assert await client.silent(0.1)


async def test_without_subscribe_no_frames(live) -> None:
    async with connected(ALICE) as sender, connected(ALICE) as watcher:
        await sender.request("generate_report", {}, id="ns")
        await watcher.data("request.status", {"request_id": "ns", "subscribe": False})
        await manager.send_to_request(key("ns").as_string(), frames.progress("ns", 10))
        assert await watcher.silent(0.1)


@pytest.mark.parametrize(
    "status", [RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED]
)
async def test_final_record_drops_later_frames(live, status) -> None:
    store_request("fin")
    finish("fin", status)
    async with connected(ALICE) as client:
        data = await client.data("request.status", {"request_id": "fin"})
        assert data["status"] == status.value
        request_key = key("fin").as_string()
        await manager.send_to_request(request_key, frames.progress("fin", 99), fresh=True)
        await manager.send_to_request(request_key, frames.complete("fin", {}), fresh=True)
        await manager.send_to_request(request_key, frames.error("fin", "CANCELLED"), fresh=True)
        assert await client.silent(0.15)
        # frames about other requests still flow
        await manager.send_to_request(request_key, frames.progress("other", 1), fresh=True)
        assert (await client.recv())["request_id"] == "other"


# --- request.cancel -------------------------------------------------------------------


async def test_cancel_pending_request(live) -> None:
    async with connected(ALICE) as sender, connected(ALICE) as other:
        await sender.request("generate_report", {"duration_s": 30}, id="c1")
        data = await other.data("request.cancel", {"request_id": "c1"})
        assert data["status"] == "CANCELLED"
        assert data["error"]["code"] == "CANCELLED"
        assert isinstance(data["ended_at"], int)
        assert request_store.get(key("c1")).status is RequestStatus.CANCELLED

        terminal = await sender.recv()
        assert terminal["type"] == "error"
        assert terminal["request_id"] == "c1"
        assert terminal["error"]["code"] == "CANCELLED"
        assert terminal["error"]["retryable"] is False
        assert await sender.silent(0.15), "exactly one terminal frame"
        assert await other.silent(0.05), "the canceller was neither sender nor subscriber"

        # cancelling again returns the record unchanged and sends nothing
        again = await other.data("request.cancel", {"request_id": "c1"})
        assert again == data
        assert await sender.silent(0.1)


async def test_cancel_by_subscribed_sender_gets_one_terminal(live) -> None:
    async with connected(ALICE) as client:
        await client.request("generate_report", {}, id="c2")
        await client.data("request.status", {"request_id": "c2"})
        reply = await client.request("request.cancel", {"request_id": "c2"}, id="cancel-c2")
        assert reply["type"] == "response" and reply["request_id"] == "cancel-c2"
        terminal = await client.recv()
        assert (terminal["type"], terminal["request_id"]) == ("error", "c2")
        assert await client.silent(0.15)
        # and later frames of the worker are dropped
        await manager.send_to_request(key("c2").as_string(), frames.complete("c2", {}), fresh=True)
        assert await client.silent(0.1)


async def test_cancel_reaches_subscribers(live) -> None:
    async with connected(ALICE) as sender, connected(ALICE) as watcher:
        await sender.request("generate_report", {}, id="c3")
        await watcher.data("request.status", {"request_id": "c3"})
        await sender.data("request.cancel", {"request_id": "c3"})
        assert (await sender.recv())["error"]["code"] == "CANCELLED"
        assert (await watcher.recv())["error"]["code"] == "CANCELLED"
        assert await sender.silent(0.1) and await watcher.silent(0.05)


@pytest.mark.parametrize("status", [RequestStatus.PROCESSING, RequestStatus.RETRYING])
async def test_cancel_running_request(live, status) -> None:
    store_request("run")
    finish("run", status)
    async with connected(ALICE) as client:
        data = await client.data("request.cancel", {"request_id": "run"})
        assert data["status"] == "CANCELLED"


@pytest.mark.parametrize(
    "status", [RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED]
)
async def test_cancel_of_finished_request_returns_it_unchanged(live, status) -> None:
    store_request("old")
    before = finish("old", status).public()
    async with connected(ALICE) as client:
        data = await client.data("request.cancel", {"request_id": "old"})
        assert data == before
        assert await client.silent(0.1)
    assert request_store.get(key("old")).public() == before


@pytest.mark.parametrize("owner", [None, ("bob", "acme"), ("alice", "globex")])
async def test_cancel_unknown_or_foreign_is_not_found(live, owner) -> None:
    if owner is not None:
        store_request("nf", user=owner[0], tenant=owner[1])
    async with connected(ALICE) as client:
        reply = await client.request("request.cancel", {"request_id": "nf"}, id="k")
        assert error_code(reply) == "NOT_FOUND"
        assert reply["request_id"] == "k"
    if owner is not None:
        assert request_store.get(key("nf", *owner)).status is RequestStatus.PENDING


async def test_cancel_racing_with_deletion_is_not_found(live, monkeypatch) -> None:
    """The record vanished (TTL) between the refused cancel and the re-read."""
    from storage.errors import InvalidTransition, NotFound

    def cancel(key):
        raise InvalidTransition("final", current_status="COMPLETED")

    def get(key, consistent=True):
        raise NotFound("gone")

    monkeypatch.setattr(request_store, "cancel", cancel)
    monkeypatch.setattr(request_store, "get", get)
    async with connected(ALICE) as client:
        assert error_code(await client.request("request.cancel", {"request_id": "x"})) == (
            "NOT_FOUND"
        )


# --- request.list ---------------------------------------------------------------------

T0 = 1_700_000_000_000


@pytest.fixture
def history(live) -> list[str]:
    """Alice's seven requests (r0 oldest .. r6 newest), some finished; Bob's and a
    globex alice's that she must never see."""
    ids = [f"r{i}" for i in range(7)]
    for i, rid in enumerate(ids):
        store_request(rid, now=T0 + i * 1000)
    finish("r1", RequestStatus.COMPLETED)
    finish("r3", RequestStatus.COMPLETED)
    finish("r4", RequestStatus.CANCELLED)
    store_request("bob1", user="bob", now=T0 + 10_000)
    store_request("g1", tenant="globex", now=T0 + 10_000)
    return ids


async def test_list_own_requests_newest_first(history) -> None:
    async with connected(ALICE) as client:
        data = await client.data("request.list", {})
        assert [r["request_id"] for r in data["requests"]] == history[::-1]
        assert data["cursor"] is None
        assert all(set(r) >= PUBLIC_KEYS for r in data["requests"])


@pytest.mark.parametrize("limit", [1, 2, 3, 6, 7, 100])
async def test_list_pagination(history, limit) -> None:
    async with connected(ALICE) as client:
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            payload = {"limit": limit} | ({"cursor": cursor} if cursor else {})
            data = await client.data("request.list", payload)
            assert len(data["requests"]) <= limit
            seen += [r["request_id"] for r in data["requests"]]
            cursor = data["cursor"]
            pages += 1
            if cursor is None:
                break
            assert isinstance(cursor, str)
        assert seen == history[::-1]
        assert pages == -(-len(history) // limit)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("COMPLETED", ["r3", "r1"]),
        ("CANCELLED", ["r4"]),
        ("PENDING", ["r6", "r5", "r2", "r0"]),
        ("FAILED", []),
    ],
)
async def test_list_status_filter(history, status, expected) -> None:
    async with connected(ALICE) as client:
        data = await client.data("request.list", {"status": status})
        assert [r["request_id"] for r in data["requests"]] == expected
        assert all(r["status"] == status for r in data["requests"])


async def test_list_status_filter_with_pages(history) -> None:
    async with connected(ALICE) as client:
        first = await client.data("request.list", {"status": "PENDING", "limit": 3})
        assert [r["request_id"] for r in first["requests"]] == ["r6", "r5", "r2"]
        second = await client.data(
            "request.list", {"status": "PENDING", "limit": 3, "cursor": first["cursor"]}
        )
        assert [r["request_id"] for r in second["requests"]] == ["r0"]
        assert second["cursor"] is None


async def test_list_of_user_without_requests(live) -> None:
    async with connected(make_token("nobody")) as client:
        assert await client.data("request.list", {}) == {"requests": [], "cursor": None}


def _b64(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"limit": 0}, "payload.limit"),
        ({"limit": 101}, "payload.limit"),
        ({"limit": -5}, "payload.limit"),
        ({"limit": "ten"}, "payload.limit"),
        ({"status": "BOGUS"}, "payload.status"),
        ({"status": "completed"}, "payload.status"),
        ({"cursor": "x" * 3000}, "payload.cursor"),
        ({"cursor": "!!not base64!!"}, "payload.cursor"),
        ({"cursor": _b64([1, 2])}, "payload.cursor"),
        ({"cursor": _b64({"r": "r1"})}, "payload.cursor"),
        ({"cursor": _b64({"r": "", "c": 5})}, "payload.cursor"),
        ({"cursor": _b64({"r": "r1", "c": -1})}, "payload.cursor"),
        ({"cursor": _b64({"r": "r1", "c": "soon"})}, "payload.cursor"),
    ],
)
async def test_list_bad_arguments_are_validation_errors(history, payload, field) -> None:
    async with connected(ALICE) as client:
        reply = await client.request("request.list", payload, id="l1")
        assert error_code(reply) == "VALIDATION_ERROR"
        assert reply["request_id"] == "l1"
        assert [e["field"] for e in reply["error"]["details"]["errors"]] == [field]


async def test_list_cursor_of_another_user_shows_only_own(history) -> None:
    async with connected(ALICE) as alice, connected(make_token("bob")) as bob:
        page = await alice.data("request.list", {"limit": 2})
        data = await bob.data("request.list", {"cursor": page["cursor"]})
        assert [r["request_id"] for r in data["requests"]] in ([], ["bob1"])
        assert all(r["request_id"] == "bob1" for r in data["requests"])


async def test_unexpected_store_error_is_internal_error(live, monkeypatch) -> None:
    from storage.errors import StoreError

    def broken(*args, **kwargs):
        raise StoreError("storage rejected list_by_user: ValidationException on table rt-x")

    monkeypatch.setattr(request_store, "list_by_user", broken)
    async with connected(ALICE) as client:
        reply = await client.request("request.list", {}, id="ie")
        assert error_code(reply) == ErrorCode.INTERNAL_ERROR.value
        assert reply["error"]["message"] == "Internal server error"


@pytest.mark.parametrize(
    ("action", "payload", "method"),
    [
        ("request.list", {"status": "PENDING"}, "list_by_user"),
        ("request.status", {"request_id": "r1", "subscribe": False}, "get"),
        ("request.cancel", {"request_id": "r1"}, "cancel"),
    ],
)
async def test_request_actions_use_the_storage_pool(live, monkeypatch, action, payload, method):
    """Storage calls of request.* run on the dedicated storage threads, not on asyncio's
    default executor."""
    import threading

    threads: list[str] = []
    real = getattr(request_store, method)

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(request_store, method, spy)
    async with connected(ALICE) as client:
        await client.request(action, payload, id="pool")
    assert threads and all(name.startswith("storage") for name in threads), threads
