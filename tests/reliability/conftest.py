"""Fixtures of the reliability suite: faults, load and hostile input.

The processes are started by the one launcher, bench/stack.py: the session ``e2e``
(tests/fixtures/live.py: in-memory dynalite, tenants, JWT secret) serves most modules,
and the fault modules build storage of their own with ``environment(on_disk=True)`` so
that they can kill it without disturbing anyone else.

``figures`` records what a test measured (requests, disconnects, faults injected,
anything lost, memory); they are printed at the end of the run under "reliability
figures" and are what docs/reliability.md reports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.stack import JWT_SECRET, SECRET_KEY, Environment, environment
from tests.fixtures.summary import summary_section

__all__ = ["LOG_DIRS", "SECRETS", "fault_env", "figures", "remember"]

FIGURES = summary_section("reliability figures")  # printed by tests/fixtures/summary.py
# Log directories of the environments built here, and every token, key and password
# handed out: test_secrets_in_logs.py looks for the latter in the former.
LOG_DIRS: list[str] = []
SECRETS: set[str] = {JWT_SECRET, SECRET_KEY}


def remember(secret: str) -> str:
    """Note a token, key or password: it must never show up in a log."""
    SECRETS.add(secret)
    if secret.count(".") == 2 and len(secret.rsplit(".", 1)[1]) >= 16:
        SECRETS.add(secret.rsplit(".", 1)[1])  # a JWT's signature alone
    return secret


@pytest.fixture(scope="session", autouse=True)
def _remember_minted_tokens() -> Iterator[None]:
    """Every token the stacks mint (``Environment.mint``) is remembered."""
    original = Environment.mint

    def mint(self: Environment, *args: Any, **kwargs: Any) -> str:
        return remember(original(self, *args, **kwargs))

    Environment.mint = mint  # type: ignore[method-assign]
    try:
        yield
    finally:
        Environment.mint = original  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def figures() -> dict[str, str]:
    """Record a figure of the run (printed at the end, quoted in docs/reliability.md)."""
    return FIGURES


@pytest.fixture(scope="module")
def fault_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    """Storage of this module's own: dynalite on disk on a fixed port (``env.dynalite``
    can be killed and restarted with the same data), a data dir with the tenants."""
    with environment(tmp_path_factory.mktemp("fault"), on_disk=True) as env:
        LOG_DIRS.append(str(env.log_dir))
        yield env


def rss_kib(pid: int) -> int:
    """Resident set size of a process (Linux /proc), in KiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default
