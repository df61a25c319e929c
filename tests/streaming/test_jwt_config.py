"""JWT configuration checked at start-up (streaming/jwt_config.py), and every PyJWT
error at verification answered 4401 (never an uncaught exception)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.exceptions import ImproperlyConfigured

from streaming.auth import AuthFailure, verify_token
from streaming.jwt_config import check_jwt_config, config_errors, jwt_system_check
from tests.support.sockets import SECRET, make_token

pytestmark = pytest.mark.usefixtures("asgi_settings")


def _pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_PEM, EC_PEM = _pem(RSA_KEY), _pem(EC_KEY)


@pytest.mark.parametrize(
    ("algorithms", "secret", "public_key", "problem"),
    [
        (["HS256"], SECRET, "", None),
        (["RS256"], "", RSA_PEM, None),
        (["RS256", "PS256"], "", RSA_PEM, None),
        (["ES256"], "", EC_PEM, None),
        (["HS256", "RS256"], SECRET, RSA_PEM, "mixes HMAC"),
        (["HS256", "ES256"], SECRET, EC_PEM, "mixes HMAC"),
        (["RS256"], SECRET, "", "needs STREAMER_JWT_PUBLIC_KEY"),
        (["ES256"], "", RSA_PEM, "not a valid key for ES256"),
        (["RS256"], "", "not a pem", "not a valid key for RS256"),
        (["HS256"], SECRET, RSA_PEM, "only has HS* algorithms"),
        (["none"], SECRET, "", "unsupported algorithms: none"),
        (["HS257"], SECRET, "", "unsupported algorithms: HS257"),
        ([], SECRET, "", "is empty"),
    ],
)
def test_config_errors(
    algorithms: list[str], secret: str, public_key: str, problem: str | None
) -> None:
    errors, _ = config_errors(algorithms, secret, public_key)
    if problem is None:
        assert errors == []
    else:
        assert any(problem in e for e in errors), errors


def test_a_missing_secret_is_a_warning_not_an_error() -> None:
    errors, warnings = config_errors(["HS256"], "", "")
    assert errors == [] and "STREAMER_JWT_SECRET" in warnings[0]


def test_start_up_refuses_a_mixed_configuration(settings) -> None:
    settings.STREAMER_JWT_ALGORITHMS = ["HS256", "RS256"]
    settings.STREAMER_JWT_PUBLIC_KEY = RSA_PEM
    with pytest.raises(ImproperlyConfigured, match="mixes HMAC"):
        check_jwt_config()
    assert [m.id for m in jwt_system_check()] == ["streamer.E101"]
    settings.STREAMER_JWT_ALGORITHMS = ["RS256"]
    check_jwt_config()
    assert jwt_system_check() == []


def _forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"x") -> str:
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return ".".join(
        (part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature))
    )


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "tenant_id": "acme", "iat": now, "exp": now + 600, **extra}


HOSTILE = {
    # PyJWT error class each token provokes on a (deliberately) mixed configuration
    "rs256-token-meets-hmac-key (InvalidKeyError)": lambda: jwt.encode(
        _claims(), RSA_KEY, algorithm="RS256"
    ),
    "alg-none (InvalidAlgorithmError)": lambda: _forge({"alg": "none"}, _claims(), b""),
    "alg-not-accepted (InvalidAlgorithmError)": lambda: make_token(algorithm="HS512"),
    "bad-signature (InvalidSignatureError)": lambda: make_token(key="y" * 40),
    "not-three-parts (DecodeError)": lambda: "abc.def",
    "bad-base64 (DecodeError)": lambda: "!!!.@@@.###",
    "header-not-object (DecodeError)": lambda: _forge([1, 2], _claims()),  # type: ignore[arg-type]
    "payload-not-json (DecodeError)": lambda: "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",
    "expired (ExpiredSignatureError)": lambda: make_token(exp_in=-120),
    "not-yet-valid (ImmatureSignatureError)": lambda: make_token(nbf=int(time.time()) + 600),
    "iat-not-a-number (InvalidIssuedAtError)": lambda: make_token(iat="yesterday"),
    "exp-not-a-number (DecodeError)": lambda: make_token(exp_in=None, exp="soon"),
    "missing-exp (MissingRequiredClaimError)": lambda: make_token(exp_in=None),
    "sub-not-a-string": lambda: make_token(sub=["alice"]),
}


@pytest.mark.parametrize("attack", list(HOSTILE), ids=list(HOSTILE))
def test_every_pyjwt_error_is_4401(settings, attack: str) -> None:
    """Even on a mixed HS256+RS256 configuration (refused at start-up, but suppose it
    slipped through) no token makes verification raise anything but AuthFailure(4401)."""
    settings.STREAMER_JWT_SECRET = SECRET
    settings.STREAMER_JWT_PUBLIC_KEY = ""
    settings.STREAMER_JWT_ALGORITHMS = ["HS256", "RS256"]
    with pytest.raises(AuthFailure) as failure:
        verify_token(HOSTILE[attack]())
    assert failure.value.close_code == 4401
    assert failure.value.reason in {"Invalid token", "Token expired"}
