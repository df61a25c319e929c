"""Fixtures of the real-browser tests: Debian's Chromium, playwright-core from npm
(browser-tests/, installed with ``npm ci`` when missing: it downloads no browser) and a
live stack shared by the whole session."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stack import REPO_ROOT, Stack
from tests.fixtures.live import dev_stack

DRIVER_DIR = REPO_ROOT / "browser-tests"
PLAYWRIGHT = DRIVER_DIR / "node_modules" / "playwright-core" / "package.json"


def chromium_path() -> str | None:
    for candidate in ("chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.fail(
            "Debian's chromium is not installed (scripts/bootstrap installs it: "
            "apt-get install chromium)"
        )
    return path


@pytest.fixture(scope="session")
def browser_driver(chromium: str) -> Path:
    """The Node driver script, with playwright-core installed next to it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        pytest.fail("node is required for the browser tests (apt-get install nodejs npm)")
    if not PLAYWRIGHT.exists():
        if npm is None:
            pytest.fail("npm is required to install playwright-core (apt-get install npm)")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=DRIVER_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0 or not PLAYWRIGHT.exists():
            pytest.fail(f"npm ci in browser-tests/ failed:\n{done.stdout}\n{done.stderr}")
    return DRIVER_DIR / "run.mjs"


@pytest.fixture(scope="session")
def browser_stack(
    browser_driver: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A development stack of the browser suite's own (it disables users and tenants)."""
    with dev_stack(tmp_path_factory.mktemp("browser")) as stack:
        yield stack
