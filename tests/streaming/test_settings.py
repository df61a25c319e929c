"""Settings read from the environment, each case in a fresh interpreter (as a server,
worker or ``manage.py`` command starts): the secret key is required without debug, the
HTTPS settings default to secure, and README's production environment passes
``manage.py check --deploy``."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRINT_SETTINGS = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({k: getattr(settings, k) for k in ("
    "'SECRET_KEY', 'SECURE_SSL_REDIRECT', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', "
    "'SECURE_HSTS_SECONDS', 'SECURE_PROXY_SSL_HEADER', 'CSRF_TRUSTED_ORIGINS')}))"
)


def _run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run python with only the given Streamer/Django variables set."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "STREAMER_", "ALLOWED_HOSTS"))
    }
    clean.update(DJANGO_SETTINGS_MODULE="streaming.settings", DATA_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, *args], env=clean, cwd=REPO, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({}, "DJANGO_SECRET_KEY is not set"),
        ({"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "   "}, "DJANGO_SECRET_KEY is not set"),
        (
            {"DJANGO_SECRET_KEY": "k" * 50, "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"},
            "DJANGO_SECURE_PROXY_SSL_HEADER must be 'HEADER,value'",
        ),
    ],
    ids=["no-key", "blank-key", "bad-proxy-header"],
)
def test_settings_refuse_to_load(env: dict[str, str], error: str, tmp_path: Path) -> None:
    result = _run(["-c", PRINT_SETTINGS], env, tmp_path)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and error in result.stderr
    # The same refusal stops every management command (servers and workers included).
    result = _run([str(REPO / "manage.py"), "check"], env, tmp_path)
    assert result.returncode != 0 and error in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"DJANGO_DEBUG": "1"},
            {
                "SECRET_KEY": "streamer-insecure-development-key-change-me",
                "SECURE_SSL_REDIRECT": False,
                "SESSION_COOKIE_SECURE": False,
                "CSRF_COOKIE_SECURE": False,
                "SECURE_HSTS_SECONDS": 0,
            },
        ),
        (
            {"DJANGO_SECRET_KEY": "production-key"},
            {
                "SECRET_KEY": "production-key",
                "SECURE_SSL_REDIRECT": True,
                "SESSION_COOKIE_SECURE": True,
                "CSRF_COOKIE_SECURE": True,
                "SECURE_HSTS_SECONDS": 31536000,
                "SECURE_PROXY_SSL_HEADER": None,
            },
        ),
        (
            {
                "DJANGO_SECRET_KEY": "production-key",
                "DJANGO_SECURE_SSL_REDIRECT": "0",
                "DJANGO_SECURE_HSTS_SECONDS": "60",
                "DJANGO_SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
                "DJANGO_CSRF_TRUSTED_ORIGINS": "https://a.example, https://b.example",
            },
            {
                "SECURE_SSL_REDIRECT": False,
                "SESSION_COOKIE_SECURE": True,
                "SECURE_HSTS_SECONDS": 60,
                "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
                "CSRF_TRUSTED_ORIGINS": ["https://a.example", "https://b.example"],
            },
        ),
    ],
    ids=["debug-dev-key", "production-defaults", "overrides"],
)
def test_settings_from_environment(
    env: dict[str, str], expected: dict[str, object], tmp_path: Path
) -> None:
    result = _run(["-c", PRINT_SETTINGS], env, tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: loaded[k] for k in expected} == expected


def readme_production_env() -> dict[str, str]:
    """The block under ``<!-- production-env -->`` in README.md, placeholders filled."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- production-env -->\n```sh\n(.*?)```", text, re.S)
    assert block, "README.md lost its production environment block"
    env = dict(line.split("=", 1) for line in block.group(1).splitlines() if "=" in line)
    return {k: secrets.token_urlsafe(50) if v.startswith("<") else v for k, v in env.items()}


@pytest.mark.parametrize(
    ("change", "warning"),
    [
        ({}, None),
        ({"DJANGO_SECURE_HSTS_PRELOAD": "0"}, "security.W021"),
        ({"DJANGO_SECURE_SSL_REDIRECT": "0"}, "security.W008"),
        ({"DJANGO_SESSION_COOKIE_SECURE": "0"}, "security.W012"),
        ({"DJANGO_SECRET_KEY": "short"}, "security.W009"),
    ],
    ids=["readme-env-passes", "no-preload", "no-redirect", "insecure-cookie", "weak-key"],
)
def test_check_deploy_with_the_documented_production_env(
    change: dict[str, str], warning: str | None, tmp_path: Path
) -> None:
    env = {**readme_production_env(), **change}
    result = _run(
        [str(REPO / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"], env, tmp_path
    )
    if warning is None:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "no issues" in result.stdout
    else:
        assert result.returncode != 0
        assert warning in result.stdout + result.stderr
