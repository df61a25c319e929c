"""streaming.auth without sockets: token extraction, verification, identity, issuing."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from streaming.auth import (
    MAX_TOKEN_BYTES,
    UNAUTHORIZED,
    AuthFailure,
    Identity,
    asgi_headers,
    extract_token,
    issue_token,
    parse_query,
    verify_token,
)
from tests.support.sockets import SECRET, make_token

pytestmark = pytest.mark.usefixtures("asgi_settings")


@pytest.mark.parametrize(
    ("query", "headers", "expected"),
    [
        ({}, {}, None),
        ({"token": ["a"]}, {}, "a"),
        ({"token": ["", "b"]}, {}, "b"),
        ({"token": ["a"], "Authorization": ["b"]}, {"authorization": "Bearer c"}, "a"),
        ({"Authorization": ["b"]}, {"authorization": "Bearer c"}, "b"),
        ({"Authorization": ["Bearer b"]}, {}, "b"),
        ({"Authorization": ["", "b"]}, {}, "b"),
        ({"Authorization": [""]}, {"authorization": "Bearer c"}, "c"),
        ({"authorization": ["b"]}, {}, None),  # query keys are case-sensitive
        ({}, {"authorization": "Bearer c"}, "c"),
        ({}, {"authorization": "Bearer "}, None),
        ({}, {"authorization": "Basic c"}, None),
        ({}, {"authorization": "c"}, None),
    ],
)
def test_extract_token(query, headers, expected) -> None:
    assert extract_token(query, headers) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", {}),
        (b"token=abc", {"token": ["abc"]}),
        ("token=abc&x=1", {"token": ["abc"], "x": ["1"]}),
        (b"Authorization=Bearer%20t", {"Authorization": ["Bearer t"]}),
        (b"Authorization=Bearer+t", {"Authorization": ["Bearer t"]}),
        (b"token=", {}),
    ],
)
def test_parse_query(raw, expected) -> None:
    assert parse_query(raw) == expected


def test_asgi_headers_lowercases_names() -> None:
    assert asgi_headers([(b"Authorization", b"Bearer x"), (b"User-Agent", b"ua")]) == {
        "authorization": "Bearer x",
        "user-agent": "ua",
    }


def test_verify_returns_identity_from_token_only() -> None:
    token = make_token("alice", "acme", permissions=["b", "a"], metadata={"tenant_id": "evil"})
    assert verify_token(token) == Identity("acme", "alice", frozenset({"a", "b"}))


def test_permissions_default_to_none() -> None:
    assert verify_token(make_token()).permissions == frozenset()


@pytest.mark.parametrize(
    "token",
    [None, "", "x" * (MAX_TOKEN_BYTES + 1), "a.b.c", make_token(exp_in=-31 - 30)],
)
def test_verify_failures(token) -> None:
    with pytest.raises(AuthFailure) as info:
        verify_token(token)
    assert info.value.close_code == UNAUTHORIZED
    assert info.value.reason in {"Authentication required", "Invalid token", "Token expired"}


def test_leeway_is_30_seconds(settings) -> None:
    assert settings.STREAMER_JWT_LEEWAY_S == 30
    verify_token(make_token(exp_in=-29))
    with pytest.raises(AuthFailure):
        verify_token(make_token(exp_in=-35))


def test_issue_token_round_trip(settings) -> None:
    settings.STREAMER_JWT_ISSUER = "https://streamer.example"
    settings.STREAMER_JWT_AUDIENCE = "streamer"
    token = issue_token("acme", "alice", ["reports"], ttl_s=120)
    assert verify_token(token) == Identity("acme", "alice", frozenset({"reports"}))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "https://streamer.example" and claims["aud"] == "streamer"
    assert claims["exp"] - claims["iat"] == 120
    assert abs(claims["iat"] - time.time()) < 5


def test_issue_token_picks_the_configured_hs_algorithm(settings) -> None:
    settings.STREAMER_JWT_ALGORITHMS = ["RS256", "HS512"]
    token = issue_token("acme", "alice")
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    assert jwt.decode(token, SECRET, algorithms=["HS512"])["sub"] == "alice"


@pytest.mark.parametrize(
    ("secret", "algorithms"), [("", ["HS256"]), (SECRET, ["RS256"]), (SECRET, ["ES256"])]
)
def test_issue_token_needs_hs_secret(settings, secret, algorithms) -> None:
    settings.STREAMER_JWT_SECRET = secret
    settings.STREAMER_JWT_ALGORITHMS = algorithms
    with pytest.raises(ValueError):
        issue_token("acme", "alice")


# --- the verification key is parsed once -------------------------------------------------


def _rsa_pair() -> tuple[object, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
def test_the_key_is_parsed_once_for_many_tokens(
    settings, monkeypatch: pytest.MonkeyPatch, algorithm: str
) -> None:
    if algorithm == "RS256":
        signing, settings.STREAMER_JWT_PUBLIC_KEY = _rsa_pair()
    else:
        signing = SECRET
    settings.STREAMER_JWT_ALGORITHMS = [algorithm]
    claims = {"sub": "alice", "tenant_id": "acme", "exp": int(time.time()) + 600}
    tokens = [jwt.encode({**claims, "sub": f"u{n}"}, signing, algorithm) for n in range(5)]  # type: ignore[arg-type]
    parsed: list[str] = []
    algorithm_class = type(jwt.get_algorithm_by_name(algorithm))
    original = algorithm_class.prepare_key

    def counting(self: object, key: object) -> object:
        if isinstance(key, str):
            parsed.append(key)  # a key still to be parsed (not an already prepared one)
        return original(self, key)

    monkeypatch.setattr(algorithm_class, "prepare_key", counting)
    assert [verify_token(t).user_id for t in tokens] == [f"u{n}" for n in range(5)]
    assert len(parsed) <= 1  # once (none when an earlier test already parsed this key)


@pytest.mark.parametrize(
    ("algorithm", "key", "header"),
    [
        pytest.param("none", None, None, id="none"),
        pytest.param("HS512", SECRET, None, id="algorithm-not-configured"),
        pytest.param("HS256", SECRET, {"alg": ["HS256"]}, id="alg-not-a-string"),
    ],
)
def test_a_header_naming_another_algorithm_is_refused(
    algorithm: str, key: str | None, header: dict[str, object] | None
) -> None:
    claims = {"sub": "alice", "tenant_id": "acme", "exp": int(time.time()) + 600}
    if header is None:
        token = jwt.encode(claims, key, algorithm)  # type: ignore[arg-type]
    else:  # a header PyJWT would not write: swapped into a signed token
        _, body, signature = jwt.encode(claims, key, algorithm).split(".")  # type: ignore[arg-type]
        raw = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
        token = f"{raw}.{body}.{signature}"
    with pytest.raises(AuthFailure) as failure:
        verify_token(token)
    assert failure.value.close_code == UNAUTHORIZED
