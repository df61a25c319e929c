"""``<NAME>_SECRET_ARN`` → ``<NAME>`` from Secrets Manager / SSM SecureString (moto), and
the settings reading the resolved values in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from streaming.secret_env import SecretConfigError, fetch_secret, resolve_secret_env

REGION = "eu-west-1"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def aws() -> Iterator[dict[str, str]]:
    """A Secrets Manager secret and an SSM SecureString in moto; their ARNs."""
    fetch_secret.cache_clear()
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name=REGION)
        ssm = boto3.client("ssm", region_name=REGION)
        ssm.put_parameter(
            Name="/streamer/db", Value="postgres://u:pw@db/streamer", Type="SecureString"
        )
        yield {
            "sm": sm.create_secret(Name="streamer/jwt", SecretString="jwt-secret-value")["ARN"],
            "ssm": ssm.get_parameter(Name="/streamer/db")["Parameter"]["ARN"],
            "empty": sm.create_secret(Name="streamer/binary", SecretBinary=b"\x00")["ARN"],
            "missing": f"arn:aws:secretsmanager:{REGION}:123456789012:secret:nope-AbCdEf",
        }
    fetch_secret.cache_clear()


def test_arns_become_values_and_nothing_else_changes(aws: dict[str, str]) -> None:
    env = {
        "STREAMER_JWT_SECRET_SECRET_ARN": aws["sm"],
        "DATABASE_URL_SECRET_ARN": aws["ssm"],
        "UNRELATED_SECRET_ARN": "",
        "PORT": "8000",
    }
    assert resolve_secret_env(env) == ["DATABASE_URL", "STREAMER_JWT_SECRET"]
    assert env["STREAMER_JWT_SECRET"] == "jwt-secret-value"
    assert env["DATABASE_URL"] == "postgres://u:pw@db/streamer"
    assert "UNRELATED" not in env and env["PORT"] == "8000"


def test_each_arn_is_read_once_per_process(aws: dict[str, str]) -> None:
    first = {"A_SECRET_ARN": aws["sm"]}
    resolve_secret_env(first)
    boto3.client("secretsmanager", region_name=REGION).delete_secret(
        SecretId=aws["sm"], ForceDeleteWithoutRecovery=True
    )
    again = {"B_SECRET_ARN": aws["sm"]}
    resolve_secret_env(again)  # served from the cache: no second call
    assert again["B"] == first["A"] == "jwt-secret-value"


@pytest.mark.parametrize(
    ("arn_key", "extra", "message"),
    [
        ("missing", {}, "AWS refused to read it (ResourceNotFoundException)"),
        ("empty", {}, "it has no text value"),
        ("sm", {"X": "plain"}, "set X or X_SECRET_ARN, not both"),
        (None, {"X_SECRET_ARN": "not-an-arn"}, "not an ARN"),
        (None, {"X_SECRET_ARN": "arn:aws:s3:::bucket/key"}, "not an ARN"),
        (None, {"X_SECRET_ARN": f"arn:aws:s3:{REGION}:1:bucket/key"}, "not a Secrets Manager"),
        (None, {"X_SECRET_ARN": f"arn:aws:ssm:{REGION}:1:document/x"}, "not a Secrets Manager"),
    ],
)
def test_unusable_secrets_stop_the_start(aws, arn_key, extra, message) -> None:
    env = dict(extra)
    if arn_key:
        env["X_SECRET_ARN"] = aws[arn_key]
    with pytest.raises(SecretConfigError, match="X") as caught:
        resolve_secret_env(env)
    assert message in str(caught.value)
    assert env.get("X", "plain") == "plain"  # nothing half-set


def test_unreachable_aws_is_a_clear_start_up_error(monkeypatch) -> None:
    fetch_secret.cache_clear()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    env = {"X_SECRET_ARN": f"arn:aws:secretsmanager:{REGION}:1:secret:x-AbCdEf"}
    with pytest.raises(SecretConfigError, match="AWS could not be reached"):
        resolve_secret_env(env)


def test_settings_fail_to_load_with_an_unreadable_secret() -> None:
    """The settings resolve ARNs before reading anything: a process whose secret cannot
    be read does not start (with the variable named), rather than run with a default."""
    env = {
        "DJANGO_SECRET_KEY_SECRET_ARN": "not-an-arn",
        "DJANGO_SETTINGS_MODULE": "streaming.settings",
        "PATH": "/usr/bin:/bin",
    }
    code = "import django; django.setup()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY_SECRET_ARN=not-an-arn: not an ARN" in result.stderr
