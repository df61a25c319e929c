"""Tokens on live sockets (docs/protocol.md 1.1): the lifetime cap, the per-user connection
cap, close 4401 when the token expires, ``auth.refresh``."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import AsyncExitStack
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from connections.models import Tenant
from connections.tenants import forget_tenant
from storage.connection import connection_store
from streaming.actions.registry import ActionSpec, registry
from streaming.auth import TOO_MANY_CONNECTIONS, AuthFailure, verify_token
from streaming.session import Session, open_session
from tests.support.sockets import connected, make_token, refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("asgi_settings")]

DAY = 24 * 3600


# --- token lifetime ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "accepted"),
    [
        pytest.param({"exp_in": DAY - 60}, True, id="just-under-a-day"),
        pytest.param({"exp_in": DAY}, True, id="exactly-a-day"),
        pytest.param({"exp_in": DAY + 120}, False, id="a-day-and-two-minutes"),
        pytest.param({"exp_in": 30 * 365 * DAY}, False, id="thirty-years"),
        pytest.param({"exp_in": 2 * DAY, "drop": ["iat"]}, False, id="no-iat-far-exp"),
        pytest.param({"exp_in": 3600, "drop": ["iat"]}, True, id="no-iat-near-exp"),
        # iat backdated two days: exp is near, but exp - iat is more than a day
        pytest.param({"exp_in": 3600, "iat": int(time.time()) - 2 * DAY}, False, id="old-iat"),
    ],
)
async def test_token_lifetime_cap(live, claims: dict[str, Any], accepted: bool) -> None:
    token = make_token(**claims)
    if accepted:
        async with connected(token) as client:
            assert (await client.data("echo", {}))["echo"] == {}
    else:
        code, reason = await refused(token)
        assert (code, reason) == (4401, "Token lifetime too long")


def test_lifetime_cap_follows_the_setting(settings) -> None:
    settings.STREAMER_MAX_TOKEN_LIFETIME_S = 600
    with pytest.raises(AuthFailure) as failure:
        verify_token(make_token(exp_in=3600))
    assert failure.value.close_code == 4401
    assert verify_token(make_token(exp_in=500)).user_id == "alice"


# --- connections per user ------------------------------------------------------------------


async def test_the_21st_connection_of_a_user_is_refused_with_4429(live) -> None:
    token = make_token("alice", "open")  # tenant without a tenant-wide limit
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connected(token)) for _ in range(20)]
        assert await refused(token) == (4429, "Too many connections")
        # another user of the same tenant is not affected
        async with connected(make_token("bob", "open")) as bob:
            assert (await bob.data("echo", {"x": 1}))["echo"] == {"x": 1}
        # the refused connect left nothing behind, and a freed slot can be taken again
        assert connection_store.count_by_user("open", "alice") == 20
        await clients[0].comm.disconnect()
        async with connected(token) as again:
            assert (await again.data("echo", {}))["echo"] == {}


@pytest.mark.parametrize(("own_limit", "admitted"), [(2, 2), (0, 20), (25, 25)])
async def test_the_tenant_sets_its_own_per_user_limit(live, own_limit: int, admitted: int) -> None:
    await sync_to_async(Tenant.objects.create)(
        id="own", max_connections=0, max_connections_per_user=own_limit
    )
    forget_tenant()
    token = make_token("alice", "own")
    async with AsyncExitStack() as stack:
        for _ in range(admitted):
            await stack.enter_async_context(connected(token))
        assert (await refused(token))[0] == 4429


@pytest.mark.parametrize("limit", [1, 3])
def test_simultaneous_connects_from_many_threads_never_pass_the_user_limit(
    live, limit: int
) -> None:
    """Each thread is a server process of its own (own event loop); they all connect
    the same user at once, twice each. The registry never holds more than ``limit``."""
    Tenant.objects.create(id="race", max_connections=0, max_connections_per_user=limit)
    forget_tenant()
    identity = verify_token(make_token("mallory", "race"))
    threads, per_thread = 8, 2
    barrier = threading.Barrier(threads)
    outcomes: list[object] = []
    lock = threading.Lock()

    def server(n: int) -> None:
        async def connect_all() -> list[object]:
            return await asyncio.gather(
                *(
                    open_session(
                        identity,
                        connection_id=f"t{n}-{i}",
                        transport="channels",
                        address=f"chan.{n}.{i}",
                    )
                    for i in range(per_thread)
                ),
                return_exceptions=True,
            )

        barrier.wait()
        result = asyncio.run(connect_all())
        with lock:
            outcomes.extend(result)

    workers = [threading.Thread(target=server, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    admitted = [o for o in outcomes if isinstance(o, Session)]
    refusals = [o for o in outcomes if not isinstance(o, Session)]
    assert len(outcomes) == threads * per_thread
    assert all(isinstance(r, AuthFailure) for r in refusals), refusals
    assert {r.close_code for r in refusals} <= {TOO_MANY_CONNECTIONS}  # type: ignore[union-attr]
    # Simultaneous connects for the last slots may all refuse each other: the rule errs
    # towards refusing (streaming/user_cap.py), never towards admitting.
    assert len(admitted) <= limit
    stored = connection_store.count_by_user("race", "mallory")
    assert stored == len(admitted), "refused connects must leave no record behind"
    # ... so the slots the burst did not take are free for the next connects
    for i in range(limit - len(admitted)):
        asyncio.run(
            open_session(identity, connection_id=f"late-{i}", transport="channels", address="x")
        )
    with pytest.raises(AuthFailure):
        asyncio.run(
            open_session(identity, connection_id="one-too-many", transport="channels", address="x")
        )
    assert connection_store.count_by_user("race", "mallory") == limit


# --- expiry ------------------------------------------------------------------------------


@pytest.fixture
def no_leeway(settings) -> None:
    settings.STREAMER_JWT_LEEWAY_S = 0


async def test_a_socket_is_closed_with_4401_when_its_token_expires(live, no_leeway) -> None:
    async with connected(make_token(exp_in=3)) as client:
        assert (await client.data("echo", {}))["echo"] == {}
        code, reason = await client.closed_with(wait=10)
        assert (code, reason) == (4401, "Token expired")
    assert list(connection_store.iter_by_user("acme", "alice")) == []


async def test_a_refreshed_socket_outlives_its_first_token(live, no_leeway) -> None:
    first_exp = time.time() + 3
    async with connected(make_token(exp_in=3)) as client:
        fresh = make_token(exp_in=3600)
        data = await client.data("auth.refresh", {"token": fresh})
        assert data["expires_at"] == verify_token(fresh).expires_at
        # wait until the first token is past its expiry, then the socket still answers
        await asyncio.sleep(max(0.0, first_exp - time.time()) + 0.5)
        assert await client.silent(0.3), "no close frame after a refresh"
        assert (await client.data("echo", {"still": "here"}))["echo"] == {"still": "here"}
        stored = connection_store.get(
            next(iter(connection_store.iter_by_user("acme", "alice"))).connection_id
        )
        assert stored.expires_at == data["expires_at"]


# --- auth.refresh ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new_token", "reason"),
    [
        pytest.param(lambda: make_token("bob"), "identity_mismatch", id="other-sub"),
        pytest.param(lambda: make_token("alice", "globex"), "identity_mismatch", id="other-tenant"),
        pytest.param(lambda: make_token(key="x" * 40), "invalid_token", id="bad-signature"),
        pytest.param(lambda: make_token(exp_in=-120), "expired", id="expired"),
        pytest.param(lambda: make_token(exp_in=3 * DAY), "invalid_token", id="too-long-lived"),
        pytest.param(lambda: make_token(drop=["tenant_id"]), "invalid_token", id="no-tenant"),
        pytest.param(lambda: "not.a.jwt", "invalid_token", id="garbage"),
        pytest.param(lambda: make_token("alice", "off"), "invalid_token", id="disabled-tenant"),
    ],
)
async def test_refresh_refusals_keep_the_connection_and_its_token(
    live, new_token: Any, reason: str
) -> None:
    async with connected(make_token(permissions=["reports"])) as client:
        frame = await client.request("auth.refresh", {"token": new_token()}, id="r1")
        assert frame["type"] == "error" and frame["request_id"] == "r1"
        assert frame["error"]["code"] == "FORBIDDEN"
        assert frame["error"]["details"] == {"reason": reason}
        assert (await client.data("echo", {"ok": 1}))["echo"] == {"ok": 1}


@pytest.mark.parametrize(
    "payload", [{}, {"token": ""}, {"token": 5}, {"token": "x" * (16 * 1024 + 1)}]
)
async def test_refresh_payload_is_validated(live, payload: dict[str, Any]) -> None:
    async with connected() as client:
        frame = await client.request("auth.refresh", payload)
        assert frame["error"]["code"] == "VALIDATION_ERROR"
        assert frame["error"]["details"]["errors"][0]["field"] == "payload.token"


@pytest.fixture
def guarded_action() -> Any:
    async def secret(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    registry.register(ActionSpec("tokens.secret", secret, permission="secrets"))
    yield
    registry.unregister("tokens.secret")


@pytest.mark.parametrize(
    ("before", "after", "allowed_after"),
    [([], ["secrets"], True), (["secrets"], [], False)],
    ids=["gains", "loses"],
)
async def test_permissions_come_from_the_refreshed_token(
    live, guarded_action: Any, before: list[str], after: list[str], allowed_after: bool
) -> None:
    async with connected(make_token(permissions=before)) as client:
        first = await client.request("tokens.secret", {})
        assert (first["type"] == "response") is (not allowed_after)
        await client.data("auth.refresh", {"token": make_token(permissions=after)})
        second = await client.request("tokens.secret", {})
        assert (second["type"] == "response") is allowed_after
        if not allowed_after:
            assert second["error"]["code"] == "FORBIDDEN"
        [record] = connection_store.iter_by_user("acme", "alice")
        assert set(record.permissions) == set(after)
