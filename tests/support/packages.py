"""Helpers of the client packaging tests (tests/deploy/test_*_package.py): where the
checkout is, which protocol version the docs state, and running a packaging tool so that
a failure shows the tool's own output."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Variables that would let a child process find this checkout's packages or virtualenv.
_LEAKY_VARIABLES = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}


def documented_protocol_version() -> str:
    """The version docs/protocol.md states in its first lines, e.g. ``"1.1"``."""
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    match = re.search(r"^Protocol version (\d+\.\d+)\b", text, re.MULTILINE)
    assert match, "docs/protocol.md states no 'Protocol version X.Y'"
    return match.group(1)


def isolated_env() -> dict[str, str]:
    """This process's environment without the variables that point at the checkout."""
    return {k: v for k, v in os.environ.items() if k not in _LEAKY_VARIABLES}


def run(
    args: list[str], cwd: Path, *, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool in ``cwd``; with ``check``, a non-zero exit fails the test with its output."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env=isolated_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result
