"""protocol/ is pure Python: it must not pull in Django, Channels or project apps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
FORBIDDEN = ("django", "channels", "daphne", "connections", "streaming", "pydantic")


@pytest.mark.parametrize(
    "module",
    ["protocol", "protocol.errors", "protocol.codec", "protocol.frames", "protocol.parsing"],
)
def test_importing_protocol_loads_no_framework(module: str) -> None:
    code = (
        f"import {module}, sys\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_package_reexports() -> None:
    import protocol

    for name in protocol.__all__:
        assert getattr(protocol, name) is not None
    assert protocol.parse_frame is protocol.parsing.parse_frame
    assert protocol.ErrorCode is protocol.errors.ErrorCode
