"""clients/python as its own distribution, `streamer-client`: a wheel built from the
folder installs into a fresh virtualenv, requires websockets and nothing else, leaves
Django and the server's packages out, and talks to a live server.

No network: the build backend (setuptools) and websockets come from build/wheelhouse,
which scripts/bootstrap fills with `pip download`, pinned by constraints.txt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.stack import Stack
from tests.support.packages import ROOT, documented_protocol_version, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CLIENT = ROOT / "clients" / "python"
WHEELHOUSE = ROOT / "build" / "wheelhouse"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
OFFLINE = ["--no-index", "--find-links", str(WHEELHOUSE)]
PACKAGE_FILES = {
    "streamer_client/__init__.py",
    "streamer_client/client.py",
    "streamer_client/py.typed",
}


@dataclass(frozen=True)
class Installed:
    """The built wheel and a fresh virtualenv that installed it."""

    wheel: Path
    python: Path
    workdir: Path  # an empty folder: `python -c` there sees no checkout on sys.path

    def python_c(
        self, code: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([str(self.python), "-c", code, *args], self.workdir, check=check)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    assert WHEELHOUSE.is_dir(), "build/wheelhouse is missing: run scripts/bootstrap"
    out = tmp_path_factory.mktemp("python-client")
    # A copy, so that the in-tree build leaves nothing in the checkout.
    source = out / "source"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    run([*PIP, "wheel", "--no-deps", *OFFLINE, "-w", str(out / "dist"), str(source)], out)
    (wheel,) = (out / "dist").glob("streamer_client-*.whl")
    run([sys.executable, "-m", "venv", "--without-pip", str(out / "venv")], out)
    python = out / "venv" / "bin" / "python"
    constraints = ["-c", str(ROOT / "constraints.txt")]
    run([*PIP, "--python", str(python), "install", "-q", *OFFLINE, *constraints, str(wheel)], out)
    workdir = out / "work"
    workdir.mkdir()
    return Installed(wheel, python, workdir)


def test_the_wheel_holds_the_client_package_only(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = {n for n in wheel.namelist() if ".dist-info/" not in n}
    assert names == PACKAGE_FILES


def test_its_metadata_requires_websockets_and_nothing_else(installed: Installed) -> None:
    code = (
        "import importlib.metadata as m, json;"
        "d = m.distribution('streamer-client');"
        "print(json.dumps({'requires': d.requires, 'python': d.metadata['Requires-Python']}))"
    )
    metadata = json.loads(installed.python_c(code).stdout)
    assert metadata == {"requires": ["websockets<18,>=17.0"], "python": ">=3.11"}


@pytest.mark.parametrize(
    "module, importable",
    [
        ("streamer_client", True),
        ("websockets", True),
        ("django", False),
        ("channels", False),
        ("protocol", False),
        ("streaming", False),
    ],
)
def test_the_fresh_environment_holds_the_client_and_not_the_server(
    installed: Installed, module: str, importable: bool
) -> None:
    code = "import importlib.util, sys; print(importlib.util.find_spec(sys.argv[1]) is not None)"
    assert installed.python_c(code, module).stdout.strip() == str(importable)


def test_the_installed_client_speaks_the_documented_protocol_version(installed: Installed) -> None:
    code = (
        "import streamer_client; print(streamer_client.PROTOCOL_VERSION, streamer_client.__file__)"
    )
    version, location = installed.python_c(code).stdout.split()
    assert version == documented_protocol_version()
    assert Path(location).is_relative_to(installed.python.parent.parent)  # not the checkout


@pytest.mark.e2e
def test_the_installed_client_talks_to_a_live_server(
    installed: Installed, live_stack: Stack
) -> None:
    code = """
import asyncio, json, sys
from streamer_client import StreamerClient

async def main(url, token):
    seqs = []
    async with StreamerClient(url, token=token) as client:
        echo = await client.request("echo", {"from": "wheel"})
        report = await client.request(
            "generate_report", {"duration_s": 0, "steps": 1},
            on_output=lambda chunk, seq: seqs.append(seq),
        )
    print(json.dumps({"echo": echo, "seqs": seqs, "steps": report["steps"]}))

asyncio.run(main(*sys.argv[1:]))
"""
    token = live_stack.issue_token("wheel-user")
    result = installed.python_c(code, live_stack.ws_url, token)
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["echo"] == {"echo": {"from": "wheel"}}
    assert seen["steps"] == 1
    assert seen["seqs"] and seen["seqs"] == list(range(1, len(seen["seqs"]) + 1))
