"""The server-side Python API (streaming/requests_api.py): start, get, list and cancel
requests for a user, from sync and async code, through the real queue and worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from pydantic import BaseModel

from connections.models import Tenant
from storage.requests.model import RequestStatus
from storage.requests.store import RequestStore
from storage.subscription import subscription_store
from streaming import requests_api
from streaming.actions.registry import ActionRegistry, action
from streaming.jobs import JobContext
from streaming.requests_api import DuplicateRequest, RequestError, RequestNotFound
from streaming.worker import Worker
from tests.support.worker import TENANT, new_request_id, running

S = RequestStatus


class Export(BaseModel):
    rows: int = 3


pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")


@pytest.fixture
def jobs(actions: ActionRegistry) -> ActionRegistry:
    """An async export that reports each row, a guarded one, and a sync action."""

    @action("t.export", mode="async", schema=Export, registry=actions)
    async def export(job: JobContext, payload: Export) -> dict[str, Any]:
        for row in range(1, payload.rows + 1):
            job.report(row * 100 / payload.rows, f"row {row}")
            await job.sleep(0.01)
        return {"rows": payload.rows}

    @action("t.admin_only", mode="async", permission="admin", registry=actions)
    async def admin_only(job: JobContext, payload: dict[str, Any]) -> str:
        return "ok"

    @action("t.quick", registry=actions)
    def quick(ctx: Any, payload: dict[str, Any]) -> str:
        return "now"

    return actions


@pytest.fixture
def tenant(store: RequestStore) -> Tenant:
    return Tenant.objects.create(id=TENANT, name="Acme")


@pytest.fixture
def alice() -> str:
    """A user of her own (the tables live as long as the module)."""
    return new_request_id("alice")


@pytest.fixture
def bob() -> str:
    return new_request_id("bob")


async def astart(jobs: ActionRegistry, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return await requests_api.astart(TENANT, *args, actions=jobs, **kwargs)


def start(jobs: ActionRegistry, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return requests_api.start(TENANT, *args, actions=jobs, **kwargs)


async def call(form: str, jobs: ActionRegistry, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Start through the sync form (in a thread, as a sync view would) or the async one."""
    if form == "sync":
        return await sync_to_async(start, thread_sensitive=False)(jobs, *args, **kwargs)
    return await astart(jobs, *args, **kwargs)


@pytest.mark.parametrize("form", ["sync", "async"])
async def test_a_started_request_runs_and_its_user_follows_it(
    form: str,
    jobs: ActionRegistry,
    tenant: Tenant,
    store: RequestStore,
    make_socket: Any,
    alice: str,
) -> None:
    """No sender socket: the user's socket subscribes (request.status) and gets the
    progress and the complete frame; get() then shows the result."""
    sock = await make_socket(alice)
    request_id = new_request_id("export")
    await asyncio.to_thread(
        subscription_store.subscribe,
        f"{TENANT}#{alice}#{request_id}",
        sock.connection_id,
        "channels",
        sock.channel,
    )
    record = await call(form, jobs, alice, "t.export", {"rows": 4}, request_id=request_id)
    assert (record["request_id"], record["action"]) == (request_id, "t.export")
    assert record["status"] in {"PENDING", "PROCESSING", "COMPLETED"}
    async with running(Worker(store=store, actions=jobs, poll_interval_s=0.05)):
        frames = await sock.until_terminal(request_id)
    # No acknowledgment: that frame answers a sender, and this request has none.
    kinds = [f["type"] for f in frames]
    assert set(kinds[:-1]) == {"progress"} and kinds[-1] == "complete", kinds
    percentages = [f["percentage"] for f in frames[:-1]]
    assert percentages == sorted(percentages) and percentages[-1] == 100
    assert frames[-1]["result"] == {"rows": 4}
    done = await requests_api.aget(TENANT, alice, request_id)
    assert (done["status"], done["result"]) == ("COMPLETED", {"rows": 4})


async def test_a_generated_id_and_no_permission_check(
    jobs: ActionRegistry, tenant: Tenant, alice: str
) -> None:
    """Server code is trusted: an action's permission does not apply to it."""
    record = await astart(jobs, alice, "t.admin_only")
    assert record["status"] == "PENDING" and len(record["request_id"]) == 36


@pytest.mark.parametrize("form", ["sync", "async"])
async def test_a_repeated_id_is_a_duplicate_carrying_the_existing_status(
    form: str, jobs: ActionRegistry, tenant: Tenant, alice: str, bob: str
) -> None:
    first = await call(form, jobs, alice, "t.export", request_id="same")
    with pytest.raises(DuplicateRequest) as info:
        await call(form, jobs, alice, "t.export", {"rows": 9}, request_id="same")
    assert info.value.code == "DUPLICATE_REQUEST" and not info.value.retryable
    assert info.value.existing_status == "PENDING"
    again = await requests_api.aget(TENANT, alice, "same")
    assert again["created_at"] == first["created_at"]  # nothing was overwritten
    # The same id for another user is another request.
    assert (await astart(jobs, bob, "t.export", request_id="same"))["status"] == "PENDING"


@pytest.mark.parametrize(
    ("args", "kwargs", "code", "field"),
    [
        (("alice", "t.nope"), {}, "INVALID_ACTION", None),
        (("alice", "t.quick"), {}, "INVALID_ACTION", None),
        (("alice", "bad action!"), {}, "VALIDATION_ERROR", "action"),
        (("alice", "t.export", {"rows": "many"}), {}, "VALIDATION_ERROR", "payload.rows"),
        (("alice", "t.export", [1]), {}, "VALIDATION_ERROR", "payload"),
        (("alice", "t.export", {"when": object()}), {}, "VALIDATION_ERROR", "payload"),
        (("alice", "t.export"), {"request_id": "x" * 129}, "VALIDATION_ERROR", "id"),
        (("alice", "t.export"), {"metadata": "tag"}, "VALIDATION_ERROR", "metadata"),
        (("", "t.export"), {}, "VALIDATION_ERROR", "user_id"),
        ((None, "t.export"), {}, "VALIDATION_ERROR", "user_id"),
    ],
    ids=[
        "unknown-action",
        "sync-action",
        "malformed-action",
        "schema",
        "payload-not-object",
        "payload-not-json",
        "id-too-long",
        "metadata-not-object",
        "empty-user",
        "no-user",
    ],
)
async def test_bad_input_is_refused_with_its_code_and_nothing_is_stored(
    jobs: ActionRegistry,
    tenant: Tenant,
    alice: str,
    args: tuple,
    kwargs: dict,
    code: str,
    field: str | None,
) -> None:
    user, *rest = args
    with pytest.raises(RequestError) as info:
        await astart(jobs, alice if user == "alice" else user, *rest, **kwargs)
    assert info.value.code == code
    if field is not None:
        assert field in [e["field"] for e in info.value.details["errors"]]
    listed = await requests_api.alist_requests(TENANT, alice)
    assert listed == {"requests": [], "cursor": None}


@pytest.mark.parametrize(
    ("tenant_state", "code"), [("missing", "FORBIDDEN"), ("disabled", "FORBIDDEN")]
)
async def test_an_unknown_or_disabled_tenant_starts_nothing(
    jobs: ActionRegistry, store: RequestStore, alice: str, tenant_state: str, code: str
) -> None:
    if tenant_state == "disabled":
        await Tenant.objects.acreate(id=TENANT, active=False)
    with pytest.raises(RequestError) as info:
        await astart(jobs, alice, "t.export")
    assert info.value.code == code


async def test_the_users_quota_applies(
    jobs: ActionRegistry, tenant: Tenant, alice: str, bob: str
) -> None:
    tenant.max_active_requests_per_user = 2
    await tenant.asave()
    for _ in range(2):
        await astart(jobs, alice, "t.export")
    with pytest.raises(RequestError) as info:
        await astart(jobs, alice, "t.export")
    assert (info.value.code, info.value.retryable) == ("QUOTA_EXCEEDED", True)
    assert info.value.details == {"scope": "user", "limit": 2}
    await astart(jobs, bob, "t.export")  # another user has their own quota


async def test_list_pages_with_a_cursor_and_filters_by_status(
    jobs: ActionRegistry, tenant: Tenant, alice: str
) -> None:
    ids = [(await astart(jobs, alice, "t.export"))["request_id"] for _ in range(5)]
    await requests_api.acancel(TENANT, alice, ids[0])
    first = await requests_api.alist_requests(TENANT, alice, limit=3)
    second = await requests_api.alist_requests(TENANT, alice, limit=3, cursor=first["cursor"])
    seen = [r["request_id"] for r in first["requests"] + second["requests"]]
    assert seen == ids[::-1] and second["cursor"] is None
    cancelled = await sync_to_async(requests_api.list_requests, thread_sensitive=False)(
        TENANT, alice, status="CANCELLED"
    )
    assert [r["request_id"] for r in cancelled["requests"]] == [ids[0]]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"status": "DONE"}, "status"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
async def test_list_refuses_bad_filters(
    tenant: Tenant, alice: str, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(RequestError) as info:
        await requests_api.alist_requests(TENANT, alice, **kwargs)
    assert info.value.code == "VALIDATION_ERROR"
    assert [e["field"] for e in info.value.details["errors"]] == [field]


async def test_cancel_ends_a_pending_request_once(
    jobs: ActionRegistry, tenant: Tenant, alice: str
) -> None:
    request_id = (await astart(jobs, alice, "t.export"))["request_id"]
    cancelled = await requests_api.acancel(TENANT, alice, request_id)
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["error"]["code"] == "CANCELLED"
    # Already ended: unchanged (through the sync form, from a thread).
    again = await sync_to_async(requests_api.cancel, thread_sensitive=False)(
        TENANT, alice, request_id
    )
    assert again == cancelled


@pytest.mark.parametrize("operation", ["get", "cancel"])
@pytest.mark.parametrize(
    ("user_id", "request_id"),
    [("alice", "missing"), ("bob", "ALICE"), ("alice", "x" * 200), ("", "id")],
)
async def test_another_users_or_a_missing_request_is_not_found(
    jobs: ActionRegistry,
    tenant: Tenant,
    alice: str,
    bob: str,
    operation: str,
    user_id: str,
    request_id: str,
) -> None:
    await astart(jobs, alice, "t.export", request_id="ALICE")
    function = requests_api.aget if operation == "get" else requests_api.acancel
    with pytest.raises(RequestNotFound) as info:
        await function(TENANT, {"alice": alice, "bob": bob}.get(user_id, user_id), request_id)
    assert info.value.code == "NOT_FOUND"
    assert (await requests_api.aget(TENANT, alice, "ALICE"))["status"] == "PENDING"
