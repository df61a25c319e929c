"""The demo page in a real browser (headless Chromium) against a live stack with a worker.

Each test runs one scenario of browser-tests/run.mjs (playwright-core driving
/usr/bin/chromium). A failing scenario leaves a screenshot and the page's HTML in
test-artifacts/; STREAMER_BROWSER_STATES=1 also saves a screenshot of every state a
scenario goes through (test-artifacts/states/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.stack import REPO_ROOT, Stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(180)]

ARTIFACTS = REPO_ROOT / "test-artifacts"


def run_scenario(
    name: str,
    stack: Stack,
    driver: Path,
    chromium: str,
    timeout_s: int = 120,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    args = [
        shutil.which("node") or "node",
        str(driver),
        "--scenario",
        name,
        "--base-url",
        stack.base,
        "--artifacts",
        str(ARTIFACTS),
        "--chromium",
        chromium,
        "--timeout",
        str((timeout_s - 20) * 1000),
    ]
    if os.environ.get("STREAMER_BROWSER_STATES") == "1":
        args.append("--states")
    done = subprocess.run(
        args,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    outcome: dict[str, Any] = json.loads(lines[-1]) if lines else {"ok": False}
    if done.returncode != 0 or not outcome.get("ok"):
        pytest.fail(
            f"browser scenario {name!r} failed: {outcome.get('error')}\n"
            f"screenshot: {outcome.get('screenshot')}\n"
            f"page console: {json.dumps(outcome.get('console', []), indent=1)}\n"
            f"driver stderr:\n{done.stderr[-4000:]}\n"
            f"server log (tail):\n{stack.server_log()[-4000:]}"
        )
    return outcome


def test_progress_bar_of_a_three_second_report_fills_and_completes(
    browser_stack: Stack, browser_driver: Path, chromium: str
) -> None:
    outcome = run_scenario("progress", browser_stack, browser_driver, chromium)
    assert outcome["elapsed"] >= 2500
    assert outcome["samples"] >= 3


def test_server_side_drop_mid_job_reconnects_resumes_and_completes_once(
    browser_stack: Stack, browser_driver: Path, chromium: str
) -> None:
    outcome = run_scenario("server-drop", browser_stack, browser_driver, chromium)
    assert outcome["sockets"] >= 2
    assert "reconnecting" in outcome["states"]


def test_drop_connection_button_reconnects_and_resumes(
    browser_stack: Stack, browser_driver: Path, chromium: str
) -> None:
    run_scenario("drop-button", browser_stack, browser_driver, chromium)


def test_invalid_token_shows_a_clear_message(
    browser_stack: Stack, browser_driver: Path, chromium: str
) -> None:
    outcome = run_scenario("invalid-token", browser_stack, browser_driver, chromium)
    assert outcome["attempts"] == 2


def test_cancel_ends_the_job_in_the_cancelled_state(
    browser_stack: Stack, browser_driver: Path, chromium: str
) -> None:
    outcome = run_scenario("cancel", browser_stack, browser_driver, chromium)
    assert outcome["status"] == "cancelled"


def test_several_jobs_echo_and_past_requests(
    browser_stack: Stack, browser_driver: Path, chromium: str
) -> None:
    run_scenario("overview", browser_stack, browser_driver, chromium)


def test_reports_started_by_the_server_or_another_tab_show_up_through_watch(
    browser_stack: Stack, browser_driver: Path, chromium: str
) -> None:
    outcome = run_scenario("watch", browser_stack, browser_driver, chromium)
    assert len(set(outcome["ids"])) == 2


def test_a_reports_log_survives_a_reload_in_order_without_repeats(
    browser_stack: Stack, browser_driver: Path, chromium: str
) -> None:
    outcome = run_scenario("output-log", browser_stack, browser_driver, chromium)
    assert 2 <= outcome["before"] < outcome["after"]
