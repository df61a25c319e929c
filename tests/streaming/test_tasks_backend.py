"""The Django Tasks backend (streaming/tasks_backend.py) with a real worker on moto:
owners, results, failures, cancellation, and what it refuses to run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django_tasks import TaskResultStatus
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist

from connections.models import Tenant
from storage.requests.store import RequestStore
from streaming import requests_api, tasks_backend
from streaming.tasks_backend import TaskCancelled, TaskFailed, for_user
from streaming.worker import Worker
from tests.e2e import jobs_tasks
from tests.support.worker import TENANT, eventually, new_request_id, running

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")


@pytest.fixture
def owner(store: RequestStore) -> str:
    Tenant.objects.create(id=TENANT, name="Acme")
    return new_request_id("owner")


async def finished(result_id: str) -> Any:
    async def done() -> Any:
        result = await jobs_tasks.digest.get_backend().aget_result(result_id)
        return result if result.is_finished else None

    return await eventually(done, within=15, what="the task's end")


@pytest.mark.parametrize(
    ("task", "args", "status", "value", "error"),
    [
        (jobs_tasks.digest, ("abc", 3, 0), TaskResultStatus.SUCCESSFUL, 3, None),
        (jobs_tasks.report_without_context, (2,), TaskResultStatus.SUCCESSFUL, 2, None),
        (jobs_tasks.fail_loudly, ("boom",), TaskResultStatus.FAILED, None, TaskFailed),
    ],
    ids=["with-context", "current-job", "raises"],
)
async def test_a_task_runs_on_the_worker_and_its_result_is_stored(
    owner: str, store: RequestStore, task: Any, args: tuple, status: Any, value: Any, error: Any
) -> None:
    with for_user(TENANT, owner):
        queued = await task.aenqueue(*args)
    assert queued.status == TaskResultStatus.READY and queued.id.startswith(f"{TENANT}#{owner}#")
    async with running(Worker(store=store, poll_interval_s=0.05)):
        result = await finished(queued.id)
    assert result.status == status
    assert result.args == list(args) and result.task.func is task.func
    if error is None:
        returned = result.return_value
        assert (returned["rounds"] if isinstance(returned, dict) else returned) == value
    else:
        assert result.errors[0].exception_class is error
        assert result.errors[0].traceback == "INTERNAL_ERROR: Internal error"


async def test_sync_enqueue_get_result_and_cancel(owner: str) -> None:
    def enqueue_and_cancel() -> tuple[Any, Any, Any]:
        with for_user(TENANT, owner):
            queued = jobs_tasks.digest.enqueue("x", 100, 1)
        read = jobs_tasks.digest.get_result(queued.id)
        return queued, read, tasks_backend.cancel(queued.id)

    queued, read, cancelled = await asyncio.to_thread(enqueue_and_cancel)
    assert read.id == queued.id and read.status == TaskResultStatus.READY
    assert cancelled.status == TaskResultStatus.FAILED
    assert cancelled.errors[0].exception_class is TaskCancelled


def test_enqueue_needs_an_owner() -> None:
    with pytest.raises(InvalidTaskError, match="for_user"):
        jobs_tasks.digest.enqueue("x", 1, 0)


@pytest.mark.parametrize(
    "result_id",
    ["not-a-key", f"{TENANT}#nobody#missing", "OTHER-ACTION"],
)
async def test_unknown_results_do_not_exist(owner: str, result_id: str) -> None:
    if result_id == "OTHER-ACTION":  # a request that is not a task
        record = await requests_api.astart(TENANT, owner, "generate_report", {})
        result_id = f"{TENANT}#{owner}#{record['request_id']}"
    with pytest.raises(TaskResultDoesNotExist):
        await jobs_tasks.digest.get_backend().aget_result(result_id)
    with pytest.raises(TaskResultDoesNotExist):
        await asyncio.to_thread(tasks_backend.cancel, result_id.replace("#", "/"))


@pytest.mark.parametrize(
    "path", ["os.system", "tests.e2e.jobs_tasks.hashlib", "no.such.module", "streaming"]
)
async def test_only_tasks_of_this_backend_ever_run(
    owner: str, store: RequestStore, path: str
) -> None:
    """A request naming any other callable fails without calling it; and no socket may
    start one (its permission is given to no token)."""
    record = await requests_api.astart(
        TENANT, owner, tasks_backend.TASK_ACTION, {"task": path, "args": ["echo pwned"]}
    )
    async with running(Worker(store=store, poll_interval_s=0.05)):
        done = await eventually(
            lambda: _final(owner, record["request_id"]), within=15, what="the failure"
        )
    assert done["error"] == {"code": "PROCESSING_FAILED", "message": "Unknown task"}


async def _final(owner: str, request_id: str) -> dict[str, Any] | None:
    record = await requests_api.aget(TENANT, owner, request_id)
    return record if record["status"] in ("COMPLETED", "FAILED", "CANCELLED") else None


def test_the_task_action_is_closed_to_sockets() -> None:
    from streaming.actions.registry import registry

    spec = registry.get(tasks_backend.TASK_ACTION)
    assert (spec.mode, spec.permission) == ("async", tasks_backend.TASK_PERMISSION)
