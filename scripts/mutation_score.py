"""Print the mutation score of one target (``protocol``, ``storage`` or a module under them,
e.g. ``storage.heartbeat``) from mutants/.

Run by ``scripts/mutate`` after ``mutmut run``; reads the verdicts mutmut stored beside each
mutated file, so it can be run again on its own. Score = killed / checked, where a timeout
counts as killed (the mutant changed behaviour) and "checked" leaves out mutants that were
skipped or not run yet. Mutants that no test reaches count against the score.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files

TARGET = re.compile(r"(protocol|storage)(\.[a-z_]+)*")
KILLED = {"killed", "timeout", "caught by type check"}
UNCHECKED = {"not checked", "skipped", "check was interrupted by user"}


def verdicts(target: str) -> dict[str, Counter[str]]:
    """Status counts per mutated file of ``target`` (a package or a module, dotted)."""
    parts = tuple(target.split("."))
    by_file: dict[str, Counter[str]] = {}
    for path in walk_mutatable_files():
        if Path(path).with_suffix("").parts[: len(parts)] != parts:
            continue
        data = SourceFileMutationData(path=path)
        data.load()
        if data.exit_code_by_key:
            codes = data.exit_code_by_key.values()
            by_file[str(path)] = Counter(status_by_exit_code[code] for code in codes)
    return by_file


def row(name: str, counts: Counter[str]) -> str:
    """One table line: killed / survived / no tests / not run / total and the score."""
    killed = sum(counts[s] for s in KILLED)
    unchecked = sum(counts[s] for s in UNCHECKED)
    checked = sum(counts.values()) - unchecked
    score = f"{100 * killed / checked:5.1f} %" if checked else "    -  "
    return (
        f"{name:<28} {killed:>6} {counts['survived']:>8} {counts['no tests']:>8} "
        f"{unchecked:>7} {sum(counts.values()):>6}  {score}"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not TARGET.fullmatch(argv[1]):
        print("usage: mutation_score.py protocol|storage[.MODULE]", file=sys.stderr)
        return 2
    by_file = verdicts(argv[1])
    if not by_file:
        print(f"no mutmut results for {argv[1]}: run scripts/mutate {argv[1]}", file=sys.stderr)
        return 1
    header = f"{'file':<28} {'killed':>6} {'survived':>8} {'no tests':>8} {'not run':>7}"
    print(f"{header} {'total':>6}  score")
    for name, counts in sorted(by_file.items()):
        print(row(name, counts))
    print(row("TOTAL", sum(by_file.values(), Counter())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
