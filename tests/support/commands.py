"""Running management commands in the test process, as ``manage.py`` would."""

from __future__ import annotations

from io import StringIO

from django.core.management import call_command


def run(name: str, *args: str) -> tuple[str, str]:
    """Run command ``name``: (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def stdout_of(name: str, *args: str) -> str:
    """Run command ``name``: its stdout."""
    return run(name, *args)[0]
