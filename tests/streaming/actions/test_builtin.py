"""The built-in request.* actions: request.status (resume), request.cancel,
request.list, echo."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from protocol import frames
from protocol.errors import ErrorCode, ProtocolError
from storage.requests.model import RequestStatus
from storage.requests.store import RequestStore
from storage.subscription import subscription_store
from streaming.actions.builtin import (
    ListPayload,
    RequestRef,
    StatusPayload,
    echo,
    request_cancel,
    request_list,
    request_status,
)
from streaming.lifecycle import send_terminal
from streaming.session import DeliveryGuard
from tests.support.worker import TENANT, FakeSocket, new_request_id, submit

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")


def ctx_for(sock: FakeSocket) -> Any:
    session = SimpleNamespace(
        connection_id=sock.connection_id,
        transport="channels",
        address=sock.channel,
        subscriptions=set(),
        guard=DeliveryGuard(),
    )
    return SimpleNamespace(tenant_id=TENANT, user_id=sock.user_id, session=session)


async def test_request_status_subscribes_a_reconnected_client(
    store: RequestStore, make_socket: Any
) -> None:
    first = await make_socket()
    record = await submit(first, "t.any", wake=False)
    again = await make_socket()  # the same user, reconnected
    ctx = ctx_for(again)
    data = await request_status(ctx, StatusPayload(request_id=record.request_id))
    assert data["status"] == "PENDING" and data["request_id"] == record.request_id
    assert record.key.as_string() in ctx.session.subscriptions
    await send_terminal(record, frames.complete(record.request_id, None))
    await again.drain()
    assert [f["type"] for f in again.about(record.request_id)] == ["complete"]


async def test_request_status_of_a_finished_request_marks_it_final(
    store: RequestStore, make_socket: Any
) -> None:
    sock = await make_socket()
    record = await submit(sock, "t.any", wake=False)
    await asyncio.to_thread(store.cancel, record.key)
    ctx = ctx_for(sock)
    data = await request_status(ctx, StatusPayload(request_id=record.request_id, subscribe=False))
    assert data["status"] == "CANCELLED"
    assert data["error"] == {"code": "CANCELLED", "message": "Request cancelled"}
    assert ctx.session.subscriptions == set()
    assert not ctx.session.guard.allow("progress", record.request_id, 50)


@pytest.mark.parametrize("subscribe", [True, False])
async def test_request_status_of_an_unknown_request_is_not_found(
    store: RequestStore, make_socket: Any, subscribe: bool
) -> None:
    sock = await make_socket()
    ctx = ctx_for(sock)
    missing = new_request_id("missing")
    with pytest.raises(ProtocolError) as info:
        await request_status(ctx, StatusPayload(request_id=missing, subscribe=subscribe))
    assert info.value.code is ErrorCode.NOT_FOUND
    assert ctx.session.subscriptions == set()
    assert await asyncio.to_thread(subscription_store.list_by_connection, sock.connection_id) == []


async def test_request_cancel_of_someone_elses_or_an_unknown_request_is_not_found(
    store: RequestStore, make_socket: Any
) -> None:
    alice, mallory = await make_socket("alice"), await make_socket("mallory")
    record = await submit(alice, "t.any", wake=False)
    for ctx, request_id in ((ctx_for(mallory), record.request_id), (ctx_for(alice), "nope")):
        with pytest.raises(ProtocolError) as info:
            await request_cancel(ctx, RequestRef(request_id=request_id))
        assert info.value.code is ErrorCode.NOT_FOUND
    assert (await asyncio.to_thread(store.get, record.key)).status is RequestStatus.PENDING


async def test_request_cancel_of_a_finished_request_sends_nothing(
    store: RequestStore, make_socket: Any
) -> None:
    sock = await make_socket()
    record = await submit(sock, "t.any", wake=False)
    await asyncio.to_thread(store.claim, record.key, "w", 30_000)
    await asyncio.to_thread(store.complete, record.key, {"done": True})
    data = await request_cancel(ctx_for(sock), RequestRef(request_id=record.request_id))
    assert data["status"] == "COMPLETED" and data["result"] == {"done": True}
    await sock.drain()
    assert [f["type"] for f in sock.about(record.request_id)] == ["acknowledgment"]


async def test_request_list_and_echo(store: RequestStore, make_socket: Any) -> None:
    sock = await make_socket(f"lister-{new_request_id()}")
    records = [await submit(sock, "t.any", wake=False) for _ in range(3)]
    ctx = ctx_for(sock)
    page = await request_list(ctx, ListPayload(limit=2))
    assert len(page["requests"]) == 2 and page["cursor"]
    rest = await request_list(ctx, ListPayload(limit=2, cursor=page["cursor"]))
    listed = {r["request_id"] for r in page["requests"] + rest["requests"]}
    assert listed == {r.request_id for r in records} and rest["cursor"] is None
    with pytest.raises(ProtocolError) as info:
        await request_list(ctx, ListPayload(cursor="not-a-cursor"))
    assert info.value.code is ErrorCode.VALIDATION_ERROR
    assert await echo(ctx, {"a": [1]}) == {"echo": {"a": [1]}}
