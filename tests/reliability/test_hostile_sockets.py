"""Hostile clients against real servers on real sockets (``manage.py serve`` on
127.0.0.1), for what the in-process tests (tests/streaming/test_consumer_handshake.py,
the API Gateway and admin tests) cannot show or do not cover:

* JWT attacks on a server configured for RS256 with issuer and audience: ``alg: none``,
  HS256 signed with the RS256 public key, an embedded ``jwk``, unknown and path-like
  ``kid`` headers, ``nbf`` in the future, expired, wrong issuer/audience, missing
  claims, a 1 MB token (query and header); tokens in a URL fragment, a cookie or the
  subprotocol header are ignored;
* binary, non-JSON and oversized frames from many sockets at once: each is answered,
  no socket is closed, the server stays healthy and its memory bounded;
* a connection flood from one tenant meets its limit (4429) while another tenant
  connects and works as usual;
* cross-tenant and cross-user access to a *running* request (status, subscribe,
  cancel, same id) over real sockets: NOT_FOUND, and not one frame leaks;
* the publish API with another tenant's key, and the admin pages for anonymous and
  non-staff users, over real HTTP;
* ``Origin``: a foreign origin is refused, the server's own hosts and no Origin are
  accepted;
* (the servers log at DEBUG: test_secrets_in_logs.py then finds no token, key or
  password used here in any log).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.cookiejar
import json
import os
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from bench.stack import Environment, Stack, http_get, running_stack
from bench.wsclient import WSClient, open_client
from tests.reliability.conftest import remember, rss_kib

pytestmark = pytest.mark.e2e

ISSUER = "https://idp.reliability.test"
AUDIENCE = "streamer"
FLOOD_LIMIT = 20
QUICK = {"duration_s": 0, "steps": 1, "max_requests": 0, "include_connections": False}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A JWT assembled by hand (PyJWT refuses to build most attacks)."""
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    signature = sign(f"{head}.{body}".encode()) if sign else b""
    return f"{head}.{body}.{b64(signature)}"


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[Any, str, Any]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private, public_pem, attacker


@pytest.fixture(scope="module")
def stack(e2e: Environment) -> Iterator[Stack]:
    """The HS256 server of the session secret, with its worker; DEBUG logs (the more a
    server logs, the more a leak would show)."""
    e2e.manage(
        "create_tenant-flood", "create_tenant", "flood", "--max-connections", str(FLOOD_LIMIT)
    ).wait_ok()
    with running_stack(e2e, "hostile", env={"LOG_LEVEL": "DEBUG"}) as running:
        yield running


@pytest.fixture(scope="module")
def rs_stack(e2e: Environment, stack: Stack, rsa_keys: tuple[Any, str, Any]) -> Iterator[Stack]:
    """A server that accepts only RS256 tokens of one issuer for one audience (no worker:
    the HS256 stack's worker serves the shared tables)."""
    env = {
        "STREAMER_JWT_PUBLIC_KEY": rsa_keys[1],
        "STREAMER_JWT_ALGORITHMS": "RS256",
        "STREAMER_JWT_ISSUER": ISSUER,
        "STREAMER_JWT_AUDIENCE": AUDIENCE,
        "LOG_LEVEL": "DEBUG",
    }
    with running_stack(e2e, "rs256", server_worker=False, env=env) as running:
        yield running


async def handshake(url: str, **kwargs: Any) -> tuple[str, int | None]:
    """("accepted", None) when the socket answers an echo; ("closed", close code) when
    the server closed it; ("refused", HTTP status) when the upgrade itself failed."""
    try:
        ws = await connect(url, open_timeout=10, close_timeout=3, ping_interval=None, **kwargs)
    except InvalidStatus as exc:
        return "refused", exc.response.status_code
    except (InvalidHandshake, ConnectionClosed, OSError, EOFError, TimeoutError):
        return "refused", None  # e.g. the server hung up on a 1 MB request line
    client = WSClient(ws)
    try:
        with contextlib.suppress(ConnectionClosed):
            reply = await client.call("echo", {"probe": True}, within=10)
            if reply["type"] == "response":
                return "accepted", None
    except AssertionError:
        pass  # closed while waiting
    try:
        return "closed", await client.wait_closed(within=10)
    finally:
        await client.close()


# --- JWT attacks ----------------------------------------------------------------------------


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    body = {
        "sub": "rs-user",
        "tenant_id": "demo",
        "iat": now,
        "exp": now + 600,
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


def attacks(private: Any, public_pem: str, attacker: Any) -> dict[str, str]:
    def rs256(body: dict[str, Any], key: Any = private, **headers: Any) -> str:
        return jwt.encode(body, key, algorithm="RS256", headers=headers or None)

    def hs(key: bytes) -> Any:
        return lambda data: hmac.new(key, data, hashlib.sha256).digest()

    attacker_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    return {
        "alg-none": forge({"alg": "none", "typ": "JWT"}, claims()),
        "alg-None-signed-empty": forge({"alg": "None"}, claims(), hs(b"")),
        "hs256-with-the-public-key": forge({"alg": "HS256"}, claims(), hs(public_pem.encode())),
        "hs256-with-the-public-key-der": forge(
            {"alg": "HS256"},
            claims(),
            hs(
                private.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            ),
        ),
        "attacker-key": rs256(claims(), attacker),
        "attacker-key-embedded-jwk": rs256(claims(), attacker, jwk=attacker_jwk),
        "attacker-key-jku": rs256(claims(), attacker, jku="https://evil.example/jwks.json"),
        "unknown-kid": rs256(claims(), attacker, kid="no-such-key"),
        "path-kid": rs256(claims(), attacker, kid="../../../../dev/null"),
        "kid-dev-null-hs256": forge({"alg": "HS256", "kid": "/dev/null"}, claims(), hs(b"")),
        "kid-sql": rs256(claims(), attacker, kid="' OR '1'='1"),
        "nbf-in-the-future": rs256(claims(nbf=int(time.time()) + 300)),
        "expired": rs256(claims(exp=int(time.time()) - 120)),
        "iat-only-no-exp": rs256(claims(exp=None)),
        "wrong-issuer": rs256(claims(iss="https://evil.example")),
        "no-issuer": rs256(claims(iss=None)),
        "wrong-audience": rs256(claims(aud="another-api")),
        "no-audience": rs256(claims(aud=None)),
        "no-sub": rs256(claims(sub=None)),
        "no-tenant": rs256(claims(tenant_id=None)),
        "tenant-as-list": rs256(claims(tenant_id=["demo"])),
        "signature-stripped": rs256(claims()).rsplit(".", 1)[0] + ".",
        "payload-swapped": (
            lambda good: ".".join(
                [
                    good.split(".")[0],
                    b64(json.dumps(claims(sub="admin")).encode()),
                    good.split(".")[2],
                ]
            )
        )(rs256(claims())),
    }


async def test_jwt_attacks_are_refused_on_a_real_rs256_server(
    rs_stack: Stack, rsa_keys: tuple[Any, str, Any], figures: dict[str, str]
) -> None:
    private, public_pem, attacker = rsa_keys
    server = rs_stack.servers[0]
    good = remember(jwt.encode(claims(), private, algorithm="RS256"))
    assert await handshake(server.ws_url(good)) == ("accepted", None)
    header_good = await handshake(
        server.ws_url(None), additional_headers={"Authorization": f"Bearer {good}"}
    )
    assert header_good == ("accepted", None)

    outcomes = {}
    for name, token in attacks(private, public_pem, attacker).items():
        outcomes[name] = await handshake(
            server.ws_url(urllib.parse.quote(remember(token), safe=""))
        )
    refused = {name: o for name, o in outcomes.items() if o == ("closed", 4401)}
    assert refused == outcomes, {n: o for n, o in outcomes.items() if o != ("closed", 4401)}

    # A 1 MB token, in the query string and in the header: never accepted, and the
    # server shrugs it off.
    huge = remember(jwt.encode({**claims(), "pad": "x" * 1_000_000}, private, algorithm="RS256"))
    in_query = await handshake(server.ws_url(huge))
    in_header = await handshake(
        server.ws_url(None), additional_headers={"Authorization": f"Bearer {huge}"}
    )
    for outcome in (in_query, in_header):
        assert outcome[0] in ("refused", "closed") and outcome != ("closed", None), outcome
        assert outcome[0] == "refused" or outcome[1] == 4401, outcome
    assert await handshake(server.ws_url(good)) == ("accepted", None)

    figures["JWT attacks (RS256 server, real sockets)"] = (
        f"{len(outcomes)} forged/invalid tokens → all closed 4401; 1 MB token in query → "
        f"{in_query[0]} {in_query[1]}, in header → {in_header[0]} {in_header[1]}; valid "
        "token accepted before and after"
    )


def raw_handshake(port: int, target: str, headers: tuple[str, ...] = ()) -> tuple[int, int | None]:
    """A WebSocket upgrade written by hand (a hostile client can put anything in the
    request line): (HTTP status, close code of the first frame or None)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = "\r\n".join(
        [
            f"GET {target} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *headers,
            "",
            "",
        ]
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        if not data:
            return 0, None
        status = int(data.split(b" ", 2)[1])
        if status != 101:
            return status, None
        rest = data.split(b"\r\n\r\n", 1)[1]
        sock.settimeout(5)
        with contextlib.suppress(TimeoutError):
            while len(rest) < 4:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                rest += chunk
        if len(rest) >= 4 and rest[0] == 0x88:  # FIN + close, unmasked from the server
            return status, struct.unpack("!H", rest[2:4])[0]
        return status, None  # open and silent: accepted


async def test_tokens_outside_the_supported_places_are_ignored(
    rs_stack: Stack, rsa_keys: Any, figures: dict[str, str]
) -> None:
    server = rs_stack.servers[0]
    good = remember(jwt.encode(claims(), rsa_keys[0], algorithm="RS256"))
    seen = []
    # A fragment never reaches a server from a real client; a hostile one can send it.
    for target in (
        f"/ws?v=1#token={good}",
        f"/ws#token={good}",
        f"/ws?v=1#Authorization=Bearer%20{good}",
    ):
        status, code = await asyncio.to_thread(raw_handshake, server.port, target)
        assert status != 101 or code == 4401, (target[:20], status, code)
        seen.append(f"HTTP {status}" + (f" then close {code}" if code else ""))
    for headers in (
        {"Cookie": f"token={good}; Authorization=Bearer {good}"},
        {"X-Authorization": f"Bearer {good}"},
        {"Authorization": f"Basic {good}"},
        {"Authorization": good},  # no "Bearer "
    ):
        assert await handshake(server.ws_url(None), additional_headers=headers) == ("closed", 4401)
    # A token smuggled as a subprotocol: not a token source either (the server picks no
    # subprotocol, so a compliant client gives up; either way nobody is let in).
    outcome = await handshake(server.ws_url(None), subprotocols=[good])
    assert outcome != ("accepted", None), outcome
    figures["tokens in the wrong place"] = (
        f"valid token in a URL fragment → {', '.join(seen)}; in a cookie, X-Authorization, "
        f"Basic or bare Authorization → close 4401; as a subprotocol → {outcome[0]}"
    )


# --- bad frames at scale ------------------------------------------------------------------------


async def test_bad_frames_from_many_sockets_at_once(stack: Stack, figures: dict[str, str]) -> None:
    """Three rounds of the same barrage: every frame answered, no socket closed, and the
    repeats add (almost) nothing to the server's memory: nothing is kept."""
    server = stack.servers[0]
    sockets, per_kind, rounds = 40, 4, 3
    bad: list[str | bytes] = [
        *(os.urandom(64) for _ in range(per_kind)),  # binary
        *("{not json" for _ in range(per_kind)),
        *(json.dumps([1, 2, 3]) for _ in range(per_kind)),
        *("x" * (128 * 1024 + 1) for _ in range(per_kind)),  # just over the limit
        *(json.dumps({"action": "echo", "payload": {"b": "y" * 900_000}}) for _ in range(2)),
    ]

    async def one(name: str) -> tuple[list[dict[str, Any]], bool]:
        async with stack.client(name) as client:
            for frame in bad:
                await client.ws.send(frame)
            answer = await client.call("echo", {"still": "here"}, within=30)
            assert answer["type"] == "response", answer
            return [f for f in client.frames if f.get("request_id") is None], client.closed

    rss = [rss_kib(server.proc.pid)]
    for r in range(rounds):
        results = await asyncio.gather(*(one(f"badframes-{r}-{i}") for i in range(sockets)))
        reasons: dict[str, int] = {}
        for errors, closed in results:
            assert not closed
            assert len(errors) == len(bad), [e.get("error") for e in errors]
            for frame in errors:
                assert frame["type"] == "error", frame
                assert frame["error"]["code"] == "INVALID_MESSAGE", frame
                reason = frame["error"]["details"]["reason"]
                reasons[reason] = reasons.get(reason, 0) + 1
        assert reasons == {
            "binary": sockets * per_kind,
            "not_json": sockets * per_kind,
            "not_object": sockets * per_kind,
            "too_large": sockets * (per_kind + 2),
        }
        rss.append(rss_kib(server.proc.pid))
    status, _, body = await asyncio.to_thread(http_get, f"{server.url}/healthz")
    assert status == 200, body
    # The first round raises the allocator's high-water mark (how far depends on how the
    # rounds interleave on a busy machine); the repeats must not keep climbing: a leak of
    # the frames would add ~90 MB per round, ~180 MB over the two repeats.
    assert rss[-1] - rss[1] < 80 * 1024, rss
    total = rounds * sockets * len(bad)
    sent_mb = rounds * sockets * sum(len(f) for f in bad) / 1e6
    figures["bad frames"] = (
        f"{total} bad frames ({sent_mb:.0f} MB) from {rounds}×{sockets} sockets at once: "
        f"{total} INVALID_MESSAGE answers (per round {reasons}), 0 sockets closed; server RSS "
        + " → ".join(f"{k / 1024:.0f}" for k in rss)
        + " MiB (before, after round 1, after round 2)"
    )


async def test_a_frame_over_daphnes_message_limit_closes_only_that_socket(stack: Stack) -> None:
    """daphne refuses WebSocket messages over 1 MiB itself (close 1009) before any
    application code runs; that socket goes, the server and everyone else stay. (A
    server may close it while the client is still sending: its send then fails.)"""
    async with stack.client("bystander") as bystander, stack.client("giant") as giant:
        with contextlib.suppress(ConnectionClosed, ConnectionResetError):
            await giant.ws.send("z" * (2 * 1024 * 1024))
        # 1009 (message too big), or the connection is just dropped (1006)
        assert await giant.wait_closed(within=10) in (1009, 1006)
        assert (await bystander.call("echo", {}))["type"] == "response"


# --- connection flood ---------------------------------------------------------------------


async def test_a_connection_flood_from_one_tenant_meets_its_limit(
    stack: Stack, figures: dict[str, str]
) -> None:
    server = stack.servers[0]
    flood = 3 * FLOOD_LIMIT
    async with contextlib.AsyncExitStack() as exits:
        other = await exits.enter_async_context(stack.client("calm-neighbour"))

        async def attempt(i: int) -> WSClient:
            return await exits.enter_async_context(
                open_client(server.ws_url(stack.token(f"flooder-{i}", "flood")))
            )

        clients = await asyncio.gather(*(attempt(i) for i in range(flood)))

        # Every socket is either refused (4429) or answers an echo.
        async def outcome(client: WSClient) -> str:
            try:
                reply = await client.call("echo", {}, within=10)
            except (AssertionError, ConnectionClosed):
                assert await client.wait_closed() == 4429, client.close_code
                return "refused"
            assert reply["type"] == "response"
            return "accepted"

        outcomes = await asyncio.gather(*(outcome(c) for c in clients))
        accepted = outcomes.count("accepted")
        # The neighbour tenant is unaffected, during the flood and for new sockets.
        assert (await other.call("echo", {"during": "flood"}))["type"] == "response"
        async with stack.client("new-neighbour") as fresh:
            assert (await fresh.call("echo", {}))["type"] == "response"
        figures["connection flood"] = (
            f"{flood} simultaneous connects from tenant 'flood' (limit {FLOOD_LIMIT}): "
            f"{accepted} accepted, {outcomes.count('refused')} closed 4429; tenant 'demo' "
            "unaffected"
        )
        assert accepted <= FLOOD_LIMIT, f"{accepted} connections for a limit of {FLOOD_LIMIT}"
        assert accepted >= 1


# --- cross-tenant / cross-user access over real sockets -----------------------------------


async def test_nobody_reaches_a_running_request_of_someone_else(stack: Stack) -> None:
    request_id = "secret-report"
    async with stack.client("owner") as owner:
        ack = await owner.submit(request_id, {"duration_s": 3, "steps": 15})
        assert ack["type"] == "acknowledgment"
        await owner.wait_for(
            lambda f: f.get("request_id") == request_id and f["type"] == "progress",
            what="first progress",
        )
        intruders = [("intruder", "demo"), ("owner", "other"), ("intruder", "other")]
        async with contextlib.AsyncExitStack() as exits:
            opened = [
                await exits.enter_async_context(stack.client(user, tenant))
                for user, tenant in intruders
            ]
            owner_user = stack.user("owner")
            for client in opened:
                for action, payload in (
                    ("request.status", {"request_id": request_id, "subscribe": True}),
                    ("request.status", {"request_id": request_id, "subscribe": False}),
                    ("request.cancel", {"request_id": request_id}),
                    ("request.status", {"request_id": f"{owner_user}#{request_id}"}),
                    ("request.status", {"request_id": f"demo#{owner_user}#{request_id}"}),
                    ("request.cancel", {"request_id": f"..%23{request_id}"}),
                ):
                    answer = await client.call(action, payload)
                    assert answer["type"] == "error", (action, payload, answer)
                    assert answer["error"]["code"] == "NOT_FOUND", answer
                listed = await client.call("request.list", {"limit": 100})
                assert request_id not in {r["request_id"] for r in listed["data"]["requests"]}
                # The same id is theirs to use: no DUPLICATE_REQUEST that would betray
                # that someone else has one.
                mine = await client.submit(request_id, QUICK)
                assert mine["type"] == "acknowledgment", mine
            done = await owner.terminal(request_id, within=20)
            assert done["type"] == "complete"
            assert done["result"]["steps"] == 15
            for client in opened:
                await client.terminal(request_id, within=20)
            await asyncio.sleep(1.0)  # a leaked frame of the owner's run would be here by now
            for client in opened:
                frames = client.about(request_id)
                # Their own request (acknowledgment, progress, complete of 1 step) only.
                assert frames[0]["type"] == "acknowledgment", frames
                own = next(f for f in frames if f["type"] == "complete")
                assert own["result"]["steps"] == 1, own
                assert not [f for f in frames if f["type"] == "progress" and f["percentage"] < 100]
    stored = await stack.read_record(request_id, "owner")
    assert str(stored.status) == "COMPLETED"


# --- publish API and admin over real HTTP -------------------------------------------------


def issue_api_key(stack: Stack, tenant: str) -> str:
    code = (
        "from connections.models import ApiKey, Tenant; "
        f"print(ApiKey.issue(Tenant.objects.get(pk={tenant!r}), 'reliability')[1])"
    )
    proc = stack._manage(f"apikey-{tenant}", "shell", "-c", code)
    return proc.wait_ok().strip().splitlines()[-1]


def post_json(url: str, body: Any, key: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def test_the_publish_api_only_reaches_the_keys_own_tenant(stack: Stack) -> None:
    demo_key = remember(await asyncio.to_thread(issue_api_key, stack, "demo"))
    other_key = remember(await asyncio.to_thread(issue_api_key, stack, "other"))
    url = f"{stack.servers[0].url}/api/v1/publish"
    async with stack.client("subscriber") as target:
        user = stack.user("subscriber")
        stack.configure_store()
        from storage.connection import connection_store

        [info] = await asyncio.to_thread(lambda: list(connection_store.iter_by_user("demo", user)))
        frame = {"type": "notice", "text": "from another tenant"}
        for body in (
            {"user_id": user, "frame": frame},
            {"connection_id": info.connection_id, "frame": frame},
            {"frame": frame},  # the whole tenant: "other" only
        ):
            status, answer = await asyncio.to_thread(post_json, url, body, other_key)
            assert status == 200 and answer["delivered"] == 0, (body, status, answer)
        for key in (None, "", "sk_" + "0" * 40, demo_key[:-2] + "xx", demo_key[3:], "Bearer"):
            status, answer = await asyncio.to_thread(post_json, url, {"frame": frame}, key)
            assert status == 401, (status, answer)
        status, answer = await asyncio.to_thread(
            post_json, url, {"user_id": user, "frame": {"type": "notice", "text": "own"}}, demo_key
        )
        assert status == 200 and answer["delivered"] == 1, answer
        got = await target.wait_for(lambda f: f["type"] == "notice", what="the notice")
        assert got["text"] == "own"
        await asyncio.sleep(0.5)  # anything from the other tenant's calls would be here
        assert [f for f in target.frames if f["type"] == "notice"] == [got]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_call(
    opener: urllib.request.OpenerDirector, url: str, data: dict[str, str] | None = None
) -> tuple[int, str, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with opener.open(url, body, timeout=10) as resp:
            return resp.status, resp.headers.get("Location", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", ""), exc.read().decode(errors="replace")


def csrf_from(jar: http.cookiejar.CookieJar) -> str:
    return next(c.value for c in jar if c.name == "csrftoken")


async def test_admin_pages_refuse_anonymous_and_non_staff_users(stack: Stack) -> None:
    password = remember("reliability-" + os.urandom(8).hex())
    code = (
        "from django.contrib.auth.models import User; "
        f"User.objects.filter(username='mallory').delete(); "
        f"User.objects.create_user('mallory', password={password!r})"
    )
    await asyncio.to_thread(stack._manage("mallory", "shell", "-c", code).wait_ok)
    base_url = stack.servers[0].url
    pages = [
        "/admin/",
        "/admin/live/connections/?tenant=demo",
        "/admin/live/requests/?tenant=demo",
        "/admin/connections/tenant/",
    ]

    def run() -> None:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
        for page in pages:  # anonymous
            status, location, _ = http_call(opener, base_url + page)
            assert status == 302 and "/admin/login/" in location, (page, status, location)
        # A non-staff user cannot log in to the admin...
        status, _, _ = http_call(opener, f"{base_url}/admin/login/")
        assert status == 200
        status, _, body = http_call(
            opener,
            f"{base_url}/admin/login/",
            {"username": "mallory", "password": password, "csrfmiddlewaretoken": csrf_from(jar)},
        )
        assert status == 200 and "staff account" in body, status
        for page in pages:  # ...so every page still sends them to the login form
            status, location, _ = http_call(opener, base_url + page)
            assert status == 302 and "/admin/login/" in location, (page, status, location)
        # An admin action without the CSRF token is refused before anything happens.
        fresh = urllib.request.build_opener(NoRedirect)
        status, _, _ = http_call(
            fresh, f"{base_url}/admin/live/connections/?tenant=demo", {"action": "disconnect"}
        )
        assert status == 403, status

    await asyncio.to_thread(run)


# --- Origin -------------------------------------------------------------------------------


async def test_origin_checks_on_a_real_server(stack: Stack) -> None:
    server = stack.servers[0]
    url = server.ws_url(remember(stack.token("origin-user")))
    expectations = [
        (None, "accepted"),
        (f"http://127.0.0.1:{server.port}", "accepted"),
        (f"http://localhost:{server.port}", "accepted"),
        ("https://evil.example", "refused"),
        (f"http://127.0.0.1.evil.example:{server.port}", "refused"),
        ("null", "refused"),
        ("file://", "refused"),
    ]
    for origin, expected in expectations:
        outcome = await handshake(url, origin=origin)
        assert outcome[0] == expected, (origin, outcome)
        if expected == "refused":
            assert outcome[1] == 403, (origin, outcome)
