"""The request pages: list, filters, cursor pages, detail, cancel and retry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse

from connections.models import Tenant
from protocol import codec
from storage.errors import StorageUnavailable, StoreError
from storage.requests.model import RequestRecord, RequestStatus
from storage.requests.store import request_store
from storage.subscription import subscription_store
from streaming import admin_views
from streaming.lifecycle import WAKE_CHANNEL
from tests.support.admin import T0, key, messages_of, new_channel, nothing_sent, receive

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("admin_state")]

LIST = "/admin/live/requests/"
S = RequestStatus


def detail(request_id: str, user_id: str = "alice") -> str:
    return reverse(
        "admin:streaming_request_detail", args=[key(request_id, user_id=user_id).as_string()]
    )


def ids(response: Any) -> list[str]:
    return [row["record"].request_id for row in response.context["rows"]]


@pytest.fixture
def requests(tenant: Tenant, enqueue: Callable[..., RequestRecord]) -> dict[str, Any]:
    """r0 (oldest) … r3 of acme: r0 FAILED, r1 PROCESSING, r2 CANCELLED, r3 PENDING;
    r1 and r3 belong to bob. Plus one request of globex."""
    origin = new_channel()
    enqueue(
        "r0",
        now=T0,
        connection_id="c-origin",
        origin_transport="channels",
        origin_address=origin,
        metadata={"trace": "t-1"},
    )
    request_store.claim(key("r0"), "w1", 30_000, now=T0 + 100)
    request_store.update_progress(key("r0"), 40, "halfway", {"step": 2})
    request_store.fail(key("r0"), "PROCESSING_FAILED", "boom", now=T0 + 2100)
    enqueue("r1", user_id="bob", now=T0 + 1000)
    request_store.claim(key("r1", user_id="bob"), "worker-9", 30_000, now=T0 + 1500)
    enqueue("r2", now=T0 + 2000)
    request_store.cancel(key("r2"), now=T0 + 2500)
    enqueue("r3", user_id="bob", now=T0 + 3000)
    enqueue("g1", tenant_id="globex", now=T0 + 4000)
    return {"origin": origin}


def test_without_a_tenant_the_list_asks_for_one(staff: Client, tenant: Tenant) -> None:
    response = staff.get(LIST)
    assert response.status_code == 200 and response.context["rows"] == []
    assert "Choose a tenant" in response.content.decode()


def test_list_by_tenant_is_newest_first(staff: Client, requests: dict[str, Any]) -> None:
    response = staff.get(LIST, {"tenant": "acme"})
    assert response.status_code == 200
    assert ids(response) == ["r3", "r2", "r1", "r0"]
    body = response.content.decode()
    for text in ("FAILED", "PROCESSING", "CANCELLED", "PENDING", "report.run", "40 %", "1 / 3"):
        assert text in body, text
    assert detail("r0") in body


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"user": "bob"}, ["r3", "r1"]),
        ({"user": "alice", "status": "FAILED"}, ["r0"]),
        ({"status": "cancelled"}, ["r2"]),
        ({"status": "PENDING"}, ["r3"]),
        ({"status": "COMPLETED"}, []),
        ({"user": "nobody"}, []),
    ],
)
def test_list_filters(
    staff: Client, requests: dict[str, Any], params: dict[str, str], expected: list[str]
) -> None:
    response = staff.get(LIST, {"tenant": "acme", **params})
    assert response.status_code == 200
    assert ids(response) == expected


@pytest.mark.parametrize("user", ["", "alice"])
def test_cursor_pagination(
    staff: Client,
    tenant: Tenant,
    enqueue: Callable[..., RequestRecord],
    monkeypatch: pytest.MonkeyPatch,
    user: str,
) -> None:
    monkeypatch.setattr(admin_views, "PAGE_SIZE", 2)
    for i in range(5):
        enqueue(f"r{i}", now=T0 + i)
    seen: list[str] = []
    url = LIST + f"?tenant=acme&user={user}"
    pages = 0
    while url:
        response = staff.get(url)
        seen += ids(response)
        pages += 1
        url = LIST + response.context["next_url"] if response.context["next_url"] else ""
        if pages > 1:
            assert response.context["first_url"]
    assert seen == ["r4", "r3", "r2", "r1", "r0"] and pages == 3


@pytest.mark.parametrize(
    "params",
    [
        {"tenant": "acme", "cursor": "!!"},
        {"tenant": "acme", "user": "alice", "cursor": "!!"},
        {"tenant": "acme", "status": "DONE"},
        {"tenant": "x#y"},
    ],
)
def test_list_rejects_bad_filters(
    staff: Client, requests: dict[str, Any], params: dict[str, str]
) -> None:
    response = staff.get(LIST, params)
    assert response.status_code == 400
    assert "Invalid filter" in response.content.decode()


def test_list_when_storage_is_down(
    staff: Client, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("x")

    monkeypatch.setattr(request_store, "list_by_tenant", down)
    response = staff.get(LIST, {"tenant": "acme"})
    assert response.status_code == 503
    assert "Storage is unavailable" in response.content.decode()


def test_detail_page_shows_everything(staff: Client, requests: dict[str, Any]) -> None:
    subscription_store.subscribe(key("r0").as_string(), "c-sub", "channels", "chan.sub")
    response = staff.get(detail("r0"))
    assert response.status_code == 200
    body = response.content.decode()
    for text in (
        "report.run",
        "FAILED",
        "&quot;rows&quot;: 3",
        "&quot;trace&quot;: &quot;t-1&quot;",
        "40 %",
        "halfway",
        "&quot;step&quot;: 2",
        "PROCESSING_FAILED",
        "boom",
        "1 of 3",
        "2023-11-14 22:13:20 UTC",
        "Queue wait",
        "100 ms",
        "2.0 s",
        "c-origin",
        "(sender)",
        "c-sub",
        "chan.sub",
        "Retry (same id)",
        "Record expires",
    ):
        assert text in body, text
    assert "Cancel request" not in body
    assert reverse("admin:connections_live_detail", args=["c-sub"]) in body


def test_detail_of_a_running_request_shows_its_lease(
    staff: Client, requests: dict[str, Any]
) -> None:
    body = staff.get(detail("r1", user_id="bob")).content.decode()
    assert "worker-9 until" in body and "Cancel request" in body and "Retry (same id)" not in body
    assert "No subscribers." in body


def test_detail_of_a_waiting_request(staff: Client, requests: dict[str, Any]) -> None:
    response = staff.get(detail("r3", user_id="bob"))
    times = response.context["times"]
    assert times["started"] == "" and times["queue_wait"].endswith(("d", "h", "min", "s"))
    assert "Due" in response.content.decode()


def test_detail_timings_of_a_request_cancelled_before_it_started(
    staff: Client, requests: dict[str, Any]
) -> None:
    times = staff.get(detail("r2")).context["times"]
    assert times["queue_wait"] == "" and times["run_time"] == "" and times["total"] == "500 ms"


@pytest.mark.parametrize("bad", ["not-a-key", "a%23b", "a%23%23c"])
def test_detail_of_a_malformed_key_redirects(staff: Client, tenant: Tenant, bad: str) -> None:
    response = staff.get(LIST + bad + "/", follow=True)
    assert response.redirect_chain[0][0] == LIST
    assert "That is not a request key." in messages_of(response)


def test_detail_of_a_missing_request_redirects(staff: Client, requests: dict[str, Any]) -> None:
    response = staff.get(detail("nope"), follow=True)
    assert response.redirect_chain[0][0] == LIST + "?tenant=acme"
    assert any("does not exist" in m for m in messages_of(response))


def test_detail_when_storage_is_down(
    staff: Client, requests: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("x")

    monkeypatch.setattr(subscription_store, "list_by_request", down)
    response = staff.get(detail("r0"))
    assert "subscribers cannot be listed" in response.content.decode()
    monkeypatch.setattr(request_store, "get", down)
    response = staff.get(detail("r0"))
    assert response.status_code == 503 and "cannot be read now" in response.content.decode()


def test_ids_with_separators_round_trip_through_the_url(
    staff: Client, tenant: Tenant, enqueue: Callable[..., RequestRecord]
) -> None:
    enqueue("odd/id#50%", user_id="al/ice#x")
    response = staff.get(LIST, {"tenant": "acme"})
    url = response.context["rows"][0]["url"]
    page = staff.get(url)
    assert page.status_code == 200
    assert page.context["record"].request_id == "odd/id#50%"
    assert page.context["record"].user_id == "al/ice#x"


# --- actions --------------------------------------------------------------------------------


def test_cancel_ends_the_request_and_tells_its_sockets(
    staff: Client, superuser: Any, tenant: Tenant, enqueue: Callable[..., RequestRecord]
) -> None:
    origin, subscriber = new_channel(), new_channel()
    enqueue("r9", connection_id="c-origin", origin_transport="channels", origin_address=origin)
    subscription_store.subscribe(key("r9").as_string(), "c-sub", "channels", subscriber)
    response = staff.post(detail("r9"), {"action": "cancel"}, follow=True)
    assert response.redirect_chain[0][0] == detail("r9")
    assert any("cancelled" in m for m in messages_of(response))
    record = request_store.get(key("r9"))
    assert record.status is S.CANCELLED and record.error == {
        "code": "CANCELLED",
        "message": "Request cancelled",
    }
    for channel in (origin, subscriber):
        message = receive(channel)
        assert message["type"] == "streamer.frame" and message["frame_type"] == "error"
        frame = codec.loads(message["text"])
        assert frame["request_id"] == "r9" and frame["error"]["code"] == "CANCELLED"
    entry = LogEntry.objects.get()
    assert (entry.user, entry.object_id, entry.change_message) == (
        superuser,
        "acme#alice#r9",
        "Cancelled",
    )
    assert entry.content_type is None


def test_cancel_of_an_ended_request_changes_nothing(
    staff: Client, requests: dict[str, Any]
) -> None:
    response = staff.post(detail("r0"), {"action": "cancel"}, follow=True)
    assert "Request acme#alice#r0 was not changed: it has already ended (FAILED)." in messages_of(
        response
    )
    assert request_store.get(key("r0")).status is S.FAILED
    assert nothing_sent(requests["origin"])
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize("request_id", ["r0", "r2"])
def test_retry_sends_a_failed_or_cancelled_request_back_to_pending(
    staff: Client, requests: dict[str, Any], request_id: str
) -> None:
    response = staff.post(detail(request_id), {"action": "retry"}, follow=True)
    assert any("sent back to PENDING" in m for m in messages_of(response))
    record = request_store.get(key(request_id))
    assert record.status is S.PENDING and record.attempts == 0 and record.error is None
    assert record.due_at is not None and record.requeued_at is not None
    assert receive(WAKE_CHANNEL) == {"type": "request.ready", "key": f"acme#alice#{request_id}"}
    assert LogEntry.objects.get().object_id == f"acme#alice#{request_id}"
    assert "Retried" in LogEntry.objects.get().change_message
    assert "Retried by an admin" in response.content.decode()


@pytest.mark.parametrize(
    ("request_id", "user_id", "status"), [("r1", "bob", "PROCESSING"), ("r3", "bob", "PENDING")]
)
def test_retry_refuses_live_requests(
    staff: Client, requests: dict[str, Any], request_id: str, user_id: str, status: str
) -> None:
    response = staff.post(detail(request_id, user_id=user_id), {"action": "retry"}, follow=True)
    assert any(
        f"only FAILED or CANCELLED requests can be retried; it is {status}" in m
        for m in messages_of(response)
    )
    assert request_store.get(key(request_id, user_id=user_id)).status.value == status
    assert not LogEntry.objects.exists()


def test_actions_on_a_missing_request(staff: Client, requests: dict[str, Any]) -> None:
    for action in ("cancel", "retry"):
        response = staff.post(detail("nope"), {"action": action}, follow=True)
        assert "Request acme#alice#nope does not exist." in messages_of(response)
    assert not LogEntry.objects.exists()


def test_an_action_when_storage_is_down(
    staff: Client, requests: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("x")

    monkeypatch.setattr(request_store, "cancel", down)
    response = staff.post(detail("r3", user_id="bob"), {"action": "cancel"}, follow=True)
    assert any("storage is unavailable" in m for m in messages_of(response))


def test_an_unknown_action(staff: Client, requests: dict[str, Any]) -> None:
    response = staff.post(detail("r0"), {"action": "explode"}, follow=True)
    assert "Unknown action." in messages_of(response)


def test_bulk_actions(staff: Client, requests: dict[str, Any]) -> None:
    selected = [
        key("r3", user_id="bob").as_string(),
        key("r1", user_id="bob").as_string(),
        key("r0").as_string(),
        "garbage",
    ]
    response = staff.post(
        LIST + "?tenant=acme", {"action": "cancel", "_selected": selected}, follow=True
    )
    assert response.redirect_chain[0][0] == LIST + "?tenant=acme"
    texts = messages_of(response)
    assert sum("cancelled" in m for m in texts) == 2
    assert any("already ended (FAILED)" in m for m in texts)
    assert "Not a request key: garbage" in texts
    assert request_store.get(key("r1", user_id="bob")).status is S.CANCELLED
    response = staff.post(
        LIST + "?tenant=acme", {"action": "retry", "_selected": selected[:3]}, follow=True
    )
    assert sum("sent back to PENDING" in m for m in messages_of(response)) == 3
    assert LogEntry.objects.count() == 5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "nope", "_selected": ["acme#alice#r0"]}, "Choose an action."),
        ({"action": "cancel"}, "Select at least one request."),
    ],
)
def test_bulk_action_mistakes(
    staff: Client, requests: dict[str, Any], data: dict[str, Any], message: str
) -> None:
    assert message in messages_of(staff.post(LIST + "?tenant=acme", data, follow=True))


def test_view_only_staff_may_look_but_not_act(viewer: Client, requests: dict[str, Any]) -> None:
    assert viewer.get(detail("r0")).status_code == 200
    assert "Retry (same id)" not in viewer.get(detail("r0")).content.decode()
    assert viewer.post(detail("r0"), {"action": "retry"}).status_code == 403
    assert viewer.post(LIST, {"action": "retry", "_selected": ["acme#alice#r0"]}).status_code == 403
    assert request_store.get(key("r0")).status is S.FAILED


def test_an_action_on_an_invalid_key(staff: Client, tenant: Tenant, moto_dynamodb: object) -> None:
    url = reverse("admin:streaming_request_detail", args=[key("r1", user_id="u" * 300).as_string()])
    response = staff.post(url, {"action": "cancel"}, follow=True)
    assert any("user_id must be" in m for m in messages_of(response))


def test_list_when_the_tenant_index_is_missing(
    staff: Client, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    def rejected(*args: object, **kwargs: object) -> None:
        raise StoreError("storage rejected list_by_tenant")

    monkeypatch.setattr(request_store, "list_by_tenant", rejected)
    response = staff.get(LIST, {"tenant": "acme"})
    assert response.status_code == 500
    assert "by_tenant" in response.content.decode()
