"""The suite's own parallel run (tests/fixtures/parallel.py, tests/fixtures/summary.py):
pytest runs a small suite in a subprocess, serially and with pytest-xdist workers, and the
tests check what each test saw (its process, how often its module fixture was built) and
what the run printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.stack import REPO_ROOT

PLUGINS = ["-p", "tests.fixtures.parallel", "-p", "tests.fixtures.summary"]
# The inner run loads only the two plugins under test (no Django, no coverage of its own).
ISOLATED = ["-p", "no:django", "-p", "no:cov", "-p", "no:cacheprovider", "-p", "no:randomly"]
XDIST = ["--dist", "loadfile", "--no-loadscope-reorder"]

MODULE = """
import json, os, pytest
{marks}

def note(event):
    with open(os.environ["RUN_LOG"], "a") as log:
        log.write(json.dumps({{"module": __name__, "event": event, "pid": os.getpid()}}) + "\\n")

@pytest.fixture(scope="module")
def built():
    note("fixture")

@pytest.mark.parametrize("n", range({count}))
def test_it(built, n):
    from tests.fixtures.summary import summary_section
    summary_section("parallel figures")[f"{{__name__}}-{{n}}"] = "seen"
    note("test")
"""

# path -> (module marks, number of tests)
SUITE = {
    "test_a_unit_small.py": ("", 2),
    "test_b_unit_large.py": ("", 5),
    "test_c_integration.py": ("pytestmark = pytest.mark.integration", 2),
    "test_d_e2e.py": ("pytestmark = pytest.mark.e2e", 2),
    "test_e_browser.py": ("pytestmark = pytest.mark.browser", 1),
    "test_f_unit.py": ("", 3),
}
MODULES = [Path(path).stem for path in SUITE]
TESTS = sum(count for _, count in SUITE.values())


def run_suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[pytest.RunResult, list[dict[str, Any]]]:
    for path, (marks, count) in SUITE.items():
        (pytester.path / path).parent.mkdir(parents=True, exist_ok=True)
        (pytester.path / path).write_text(MODULE.format(marks=marks, count=count))
    pytester.makeini("[pytest]\nmarkers =\n    integration\n    e2e\n    browser\n")
    log = pytester.path / "run.log"
    monkeypatch.setenv("RUN_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    result = pytester.runpytest_subprocess(*ISOLATED, *PLUGINS, *args)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return result, events


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="serial"),
        pytest.param(["-n", "2", *XDIST], id="two-workers"),
    ],
)
def test_each_module_runs_in_one_process_with_its_fixture_built_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    result, events = run_suite(pytester, monkeypatch, *args)
    result.assert_outcomes(passed=TESTS)
    built = [e["module"] for e in events if e["event"] == "fixture"]
    assert sorted(built) == sorted(MODULES)  # once per module, never again on another worker
    pids = {m: {e["pid"] for e in events if e["module"] == m} for m in MODULES}
    assert all(len(p) == 1 for p in pids.values()), pids
    assert pids["test_d_e2e"] == pids["test_e_browser"]  # the one lane of live stacks


def test_one_worker_runs_the_slowest_tier_first(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one worker the order of the work queue is the order of the run."""
    result, events = run_suite(pytester, monkeypatch, "-n", "1", *XDIST)
    result.assert_outcomes(passed=TESTS)
    assert list(dict.fromkeys(e["module"] for e in events)) == [
        "test_d_e2e",  # the live lane, in the order of a serial run
        "test_e_browser",
        "test_c_integration",
        "test_b_unit_large",  # then the module with the most tests first
        "test_f_unit",
        "test_a_unit_small",
    ]


@pytest.mark.parametrize("args", [[], ["-n", "2", *XDIST]], ids=["serial", "two-workers"])
def test_figures_measured_in_any_process_are_printed_at_the_end(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    result, _ = run_suite(pytester, monkeypatch, *args)
    result.assert_outcomes(passed=TESTS)
    result.stdout.fnmatch_lines(["*= parallel figures =*"])
    for module, (_, count) in zip(MODULES, SUITE.values(), strict=True):
        for n in range(count):
            result.stdout.fnmatch_lines([f"{module}-{n}: seen"])
