"""Handshake (docs/protocol.md §1): where the token comes from, what each failure closes
with, the connection record, the Origin check."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from urllib.parse import quote

import pytest
from channels.testing import WebsocketCommunicator
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connections.manager import manager
from storage.connection import ConnectionModel, connection_store
from storage.subscription import subscription_store
from streaming.asgi import application
from tests.support.sockets import SECRET, Client, assert_no_leak, connected, make_token, refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("asgi_settings")]

GENERIC_REASONS = 123  # a close reason must fit in a control frame


def check_reason(reason: str) -> None:
    assert reason, "a refused handshake says why, briefly"
    assert len(reason.encode()) <= GENERIC_REASONS
    assert_no_leak(reason)


def connection_items() -> list[ConnectionModel]:
    return list(ConnectionModel.scan())


# --- where the token comes from ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/ws?token={t}", None, id="token-param"),
        pytest.param("/ws/?token={t}", None, id="trailing-slash"),
        pytest.param("/ws?Authorization={t}", None, id="authorization-param"),
        pytest.param("/ws?Authorization=Bearer%20{t}", None, id="authorization-param-bearer"),
        pytest.param("/ws?Authorization=Bearer+{t}", None, id="authorization-param-bearer-plus"),
        pytest.param("/ws", [(b"authorization", b"Bearer {t}")], id="authorization-header"),
        pytest.param("/ws?token={t}&other=1", None, id="extra-params"),
    ],
)
async def test_token_sources_are_accepted(live, path, headers) -> None:
    token = make_token()
    headers = [(k, v.replace(b"{t}", token.encode())) for k, v in headers or []]
    async with connected(path=path.format(t=token), headers=headers) as client:
        assert await client.silent(), "the server speaks only when spoken to"
        echo = await client.data("echo", {"x": 1})
        assert echo == {"echo": {"x": 1}}


@pytest.mark.parametrize(
    ("path", "headers", "accepted"),
    [
        # token beats Authorization param beats header: the first present is the one used
        ("/ws?token={good}&Authorization={bad}", [(b"authorization", b"Bearer {bad}")], True),
        ("/ws?token={bad}&Authorization={good}", [(b"authorization", b"Bearer {good}")], False),
        ("/ws?Authorization={good}", [(b"authorization", b"Bearer {bad}")], True),
        ("/ws?Authorization={bad}", [(b"authorization", b"Bearer {good}")], False),
        # empty values are absent
        ("/ws?token=&Authorization={good}", None, True),
        ("/ws?token=", [(b"authorization", b"Bearer {good}")], True),
        # the header needs the Bearer scheme
        ("/ws", [(b"authorization", b"{good}")], False),
        ("/ws", [(b"authorization", b"Basic {good}")], False),
        ("/ws", [(b"authorization", b"Bearer ")], False),
    ],
)
async def test_token_precedence(live, path, headers, accepted) -> None:
    good, bad = make_token(), make_token(key="another-secret-of-32-bytes-or-more!!")
    path = path.format(good=good, bad=bad)
    headers = [
        (k, v.replace(b"{good}", good.encode()).replace(b"{bad}", bad.encode()))
        for k, v in headers or []
    ]
    if accepted:
        async with connected(path=path, headers=headers) as client:
            assert await client.silent()
    else:
        code, reason = await refused(path=path, headers=headers)
        assert code == 4401
        check_reason(reason)


# --- 4401 -------------------------------------------------------------------------------


def _forge_hs256(claims: dict, key: bytes, alg: str = "HS256") -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def _claims(**over) -> dict:
    now = int(time.time())
    claims = {"sub": "alice", "tenant_id": "acme", "exp": now + 3600, "iat": now}
    claims.update(over)
    return claims


BAD_TOKENS = {
    "garbage": lambda: "not-a-jwt",
    "two-segments": lambda: "abc.def",
    "bad-base64": lambda: "@@@.@@@.@@@",
    "bad-signature": lambda: make_token(key="wrong-secret-of-at-least-32-bytes!!"),
    "tampered": lambda: _tamper(make_token()),
    "expired-beyond-leeway": lambda: make_token(exp_in=-45),
    "not-yet-valid": lambda: make_token(nbf=int(time.time()) + 120),
    "missing-sub": lambda: make_token(drop=["sub"]),
    "missing-tenant": lambda: make_token(drop=["tenant_id"]),
    "missing-exp": lambda: make_token(exp_in=None),
    "empty-sub": lambda: make_token(sub=""),
    "numeric-sub": lambda: _forge_hs256(_claims(sub=42), SECRET.encode()),
    "numeric-tenant": lambda: make_token(tenant_id=7),
    "hash-in-tenant": lambda: make_token(tenant_id="acme#x"),
    "long-tenant": lambda: make_token(tenant_id="a" * 65),
    "long-sub": lambda: make_token(sub="u" * 257),
    "permissions-not-list": lambda: make_token(permissions=None, scope="x") + "",
    "permissions-string": lambda: _forge_hs256(_claims(permissions="admin"), SECRET.encode()),
    "permissions-not-strings": lambda: _forge_hs256(_claims(permissions=[1]), SECRET.encode()),
    "exp-not-number": lambda: _forge_hs256(_claims(exp="soon"), SECRET.encode()),
    "alg-none": lambda: make_token(key=None, algorithm="none"),
    "hs512-not-configured": lambda: make_token(algorithm="HS512"),
    "too-large": lambda: make_token(padding="x" * 17_000),
}


def _tamper(token: str) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{head}.{forged}.{sig}"


# permissions absent is fine: that case is an accepted control, not a failure
BAD_TOKENS.pop("permissions-not-list")


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_bad_tokens_close_4401(live, kind) -> None:
    code, reason = await refused(quote(BAD_TOKENS[kind](), safe=""))
    assert code == 4401
    check_reason(reason)
    assert connection_items() == [], "nothing is registered for a refused socket"


async def test_missing_token_closes_4401(live) -> None:
    code, reason = await refused(path="/ws")
    assert code == 4401
    check_reason(reason)


@pytest.mark.parametrize("exp_in", [-10, -25, 5])
async def test_expiry_within_leeway_is_accepted(live, exp_in) -> None:
    async with connected(make_token(exp_in=exp_in)) as client:
        assert await client.silent()


async def test_nbf_within_leeway_is_accepted(live) -> None:
    async with connected(make_token(nbf=int(time.time()) + 10)) as client:
        assert await client.silent()


async def test_no_secret_configured_refuses_every_token(live, settings) -> None:
    settings.STREAMER_JWT_SECRET = ""
    code, reason = await refused(make_token())
    assert code == 4401
    check_reason(reason)


@pytest.mark.parametrize(
    ("claims", "accepted"),
    [
        ({"iss": "https://idp.example", "aud": "streamer"}, True),
        ({"iss": "https://idp.example", "aud": ["other", "streamer"]}, True),
        ({"iss": "https://evil.example", "aud": "streamer"}, False),
        ({"aud": "streamer"}, False),
        ({"iss": "https://idp.example", "aud": "other"}, False),
        ({"iss": "https://idp.example"}, False),
    ],
)
async def test_issuer_and_audience_when_configured(live, settings, claims, accepted) -> None:
    settings.STREAMER_JWT_ISSUER = "https://idp.example"
    settings.STREAMER_JWT_AUDIENCE = "streamer"
    token = make_token(**claims)
    if accepted:
        async with connected(token) as client:
            assert await client.silent()
    else:
        code, reason = await refused(token)
        assert code == 4401
        check_reason(reason)


@pytest.mark.parametrize(
    "claims",
    [{"iss": "https://anyone.example"}, {"aud": "some-api"}, {"aud": ["a", "b"]}],
)
async def test_issuer_and_audience_not_checked_when_not_configured(live, claims) -> None:
    async with connected(make_token(**claims)) as client:
        assert await client.silent()


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


@pytest.fixture
def rs256(settings, rsa_keys) -> bytes:
    settings.STREAMER_JWT_PUBLIC_KEY = rsa_keys[1]
    settings.STREAMER_JWT_ALGORITHMS = ["RS256"]
    return rsa_keys[0]


async def test_rs256_token_is_accepted(live, rs256) -> None:
    async with connected(make_token(key=rs256, algorithm="RS256")) as client:
        assert await client.data("echo", {}) == {"echo": {}}


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda pub, other: make_token(), id="hs256-with-shared-secret"),
        pytest.param(lambda pub, other: _forge_hs256(_claims(), pub.encode()), id="key-confusion"),
        pytest.param(
            lambda pub, other: make_token(key=other, algorithm="RS256"), id="other-rsa-key"
        ),
        pytest.param(
            lambda pub, other: make_token(key=other, algorithm="RS256", exp_in=-60),
            id="expired-rs256",
        ),
        pytest.param(lambda pub, other: make_token(key=None, algorithm="none"), id="alg-none"),
    ],
)
async def test_rs256_refuses_other_signatures(live, rs256, rsa_keys, forge) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    code, reason = await refused(forge(rsa_keys[1], other))
    assert code == 4401
    check_reason(reason)


async def test_es256_with_public_key(live, settings) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings.STREAMER_JWT_PUBLIC_KEY = public.decode()
    settings.STREAMER_JWT_ALGORITHMS = ["ES256"]
    async with connected(make_token(key=key, algorithm="ES256")) as client:
        assert await client.silent()
    other = rsa.generate_private_key(65537, 2048)
    code, _ = await refused(make_token(key=other, algorithm="RS256"))
    assert code == 4401


# --- 4403 / 4429 / 1011 ---------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["nope", "off"])
async def test_unknown_or_disabled_tenant_closes_4403(live, tenant) -> None:
    code, reason = await refused(make_token(tenant_id=tenant))
    assert code == 4403
    check_reason(reason)
    assert connection_items() == []


async def test_tenant_disabled_after_cache_refresh(live, tenants) -> None:
    async with connected(make_token(tenant_id="globex")) as client:
        assert await client.silent()
    tenant = tenants["globex"]
    tenant.active = False
    await asyncio.to_thread(tenant.save)  # the post_save signal drops the cached policy
    code, _ = await refused(make_token(tenant_id="globex"))
    assert code == 4403


async def test_connection_limit_closes_4429(live) -> None:
    token = make_token(tenant_id="tiny")
    async with connected(token) as first:
        code, reason = await refused(make_token(sub="bob", tenant_id="tiny"))
        assert code == 4429
        check_reason(reason)
        assert await first.data("echo", {}) == {"echo": {}}, "the first socket is unaffected"
        assert len(connection_items()) == 1
    # once the first one has gone the tenant may connect again
    async with connected(token) as again:
        assert await again.silent()


async def test_no_connection_limit_when_zero(live) -> None:
    async with connected(make_token(tenant_id="open")), connected(make_token(tenant_id="open")):
        assert len(connection_items()) == 2


@pytest.mark.parametrize("tenant", ["acme", "open"])
async def test_storage_unreachable_closes_1011(live, unreachable_storage, tenant) -> None:
    unreachable_storage()
    code, reason = await refused(make_token(tenant_id=tenant))
    assert code == 1011
    check_reason(reason)


# --- the connection record ------------------------------------------------------------


async def test_connection_record_written_and_removed(live) -> None:
    token = make_token(sub="alice", permissions=["reports", "admin"])
    headers = [(b"user-agent", b"pytest-agent/1.0")]
    async with connected(token, headers=headers):
        items = connection_items()
        assert len(items) == 1
        info = connection_store.get(items[0].connection_id)
        assert (info.tenant_id, info.user_id, info.transport) == ("acme", "alice", "channels")
        assert info.permissions == ("admin", "reports")
        assert info.user_agent == "pytest-agent/1.0"
        assert info.address, "the channel name is stored so any process can reach it"
    assert connection_items() == []


async def test_disconnect_removes_subscriptions(live) -> None:
    async with connected() as client:
        ack = await client.request("generate_report", {"duration_s": 0}, id="r1")
        assert ack["type"] == "acknowledgment"
        await client.data("request.status", {"request_id": "r1"})
        assert len(subscription_store.list_by_request("acme#alice#r1")) == 1
    assert subscription_store.list_by_request("acme#alice#r1") == []
    assert connection_items() == []


async def test_disconnect_with_storage_down_does_not_raise(live, unreachable_storage) -> None:
    comm = WebsocketCommunicator(application, f"/ws?token={make_token()}")
    assert (await comm.connect(5))[0]
    unreachable_storage()
    await comm.disconnect(timeout=5)  # the record is left for the stale cleanup


async def test_admin_disconnect_closes_socket(live) -> None:
    async with connected() as client:
        (item,) = connection_items()
        assert await manager.disconnect(item.connection_id, 4000, "Closed by admin")
        code, reason = await client.closed_with()
        assert (code, reason) == (4000, "Closed by admin")


async def test_refused_socket_ignores_frames(live) -> None:
    comm = WebsocketCommunicator(application, "/ws?token=bad")
    assert (await comm.connect(5))[0]
    client = Client(comm)
    assert (await client.closed_with())[0] == 4401
    await client.send({"type": "ping"})
    assert await client.silent()
    await comm.disconnect()


# --- Origin ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        (None, True),
        (b"http://localhost:8000", True),
        (b"https://127.0.0.1", True),
        (b"https://evil.example", False),
        (b"http://localhost.evil.example", False),
        (b"null", False),
    ],
)
async def test_origin_check(live, origin, accepted) -> None:
    headers = [(b"origin", origin)] if origin is not None else []
    if accepted:
        async with connected(headers=headers) as client:
            assert await client.silent()
    else:
        comm = WebsocketCommunicator(application, f"/ws?token={make_token()}", headers=headers)
        ok, _ = await comm.connect(5)
        assert not ok, "a cross-site browser socket is refused before accept"
        assert connection_items() == []
