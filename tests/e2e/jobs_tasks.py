"""Django Tasks ``@task`` functions the end-to-end tests enqueue; the stack's worker
imports them by module path, as it would a project's own tasks."""

from __future__ import annotations

import hashlib
import time

from django_tasks import task

from streaming.tasks_backend import StreamerTaskContext, current_job


@task(takes_context=True)
def digest(context: StreamerTaskContext, text: str, rounds: int, pace_s: float) -> dict:
    """Hash ``text`` ``rounds`` times, reporting each round; ``pace_s`` spreads the
    rounds out so a client can watch (like generate_report's ``duration_s``)."""
    value = text.encode()
    for done in range(1, rounds + 1):
        value = hashlib.sha256(value).digest()
        context.report(done * 100 / rounds, f"round {done} of {rounds}")
        time.sleep(pace_s)
    return {"digest": value.hex(), "rounds": rounds}


@task()
def fail_loudly(reason: str) -> None:
    """Raises: the task's request fails with INTERNAL_ERROR."""
    raise RuntimeError(reason)


@task()
def report_without_context(parts: int) -> int:
    """Reports through current_job() (a task that does not take a context)."""
    job = current_job()
    assert job is not None
    for part in range(1, parts + 1):
        job.report(part * 100 / parts, f"part {part}")
    return parts
