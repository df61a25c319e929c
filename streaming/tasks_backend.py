"""A Django Tasks backend (``django.tasks`` in Django 6, the ``django-tasks`` backport on
5.2) that runs ``@task`` functions as Streamer requests: durable, owned by one user,
run by Streamer's workers, cancellable, their progress live on the owner's sockets.

::

    TASKS = {"default": {"BACKEND": "streaming.tasks_backend.StreamerTaskBackend"}}

    @task(takes_context=True)
    def export(context, fmt):
        for n in range(10):
            context.report(n * 10, f"part {n}")   # progress frames to the owner
        return {"url": "..."}                      # the request's result

    with for_user("acme", "alice"):
        result = export.enqueue("csv")             # result.id: the request's key

Who owns a task is given by :func:`for_user` around ``enqueue`` (a task's arguments stay
the function's own). Each task becomes a request of the action ``streamer.task`` whose
payload names the task by its module path and carries its JSON arguments. A worker
imports that path, checks it is a task of this backend (never any other callable), and
calls it in a worker thread, so ``context.report``/``current_job()`` reach the
:class:`~streaming.jobs.JobContext`.

Ends: a task that returns completes with its (JSON) return value as ``result``; one that
raises ``RetryableError`` is retried while attempts remain; any other exception fails it
(``INTERNAL_ERROR``, details only in the worker's log); past ``STREAMER_TASK_TIMEOUT_S``
it fails with ``TIMEOUT``; cancelled (:func:`cancel`, the HTTP API, ``request.cancel``,
the admin) it ends CANCELLED. A sync task is stopped at its next ``report``/``check``
after a timeout or cancel (Python cannot stop a thread); an async one at once.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.conf import settings
from django.utils.module_loading import import_string
from django_tasks import TaskContext, TaskResult, TaskResultStatus
from django_tasks.backends.base import BaseTaskBackend
from django_tasks.base import Task, TaskError
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
from django_tasks.utils import normalize_json
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import ParamSpec

from connections.storage_pool import run_storage
from protocol.errors import ErrorCode
from storage.errors import NotFound
from storage.errors import ValidationError as StoreValidationError
from storage.requests.model import RequestKey, RequestRecord
from storage.requests.store import request_store
from streaming import requests_api
from streaming.actions.registry import FinalError, action
from streaming.jobs import JobContext

T = TypeVar("T")
P = ParamSpec("P")

TASK_ACTION = "streamer.task"
# Sockets must not start tasks by hand: no token should ever carry this permission.
TASK_PERMISSION = "streamer.internal.tasks"


class TaskFailed(Exception):
    """``TaskResult.errors``: the task raised (its traceback is in the worker's log)."""


class TaskTimedOut(TaskFailed):
    """``TaskResult.errors``: the task ran past ``STREAMER_TASK_TIMEOUT_S``."""


class TaskCancelled(TaskFailed):
    """``TaskResult.errors``: the task's request was cancelled."""


_ERRORS = {ErrorCode.TIMEOUT.value: TaskTimedOut, ErrorCode.CANCELLED.value: TaskCancelled}


@dataclass(frozen=True)
class Owner:
    tenant_id: str
    user_id: str


_owner: contextvars.ContextVar[Owner | None] = contextvars.ContextVar("task_owner", default=None)
_job: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("task_job", default=None)


@contextlib.contextmanager
def for_user(tenant_id: str, user_id: str) -> Iterator[None]:
    """Tasks enqueued inside this block belong to ``user_id`` of ``tenant_id``: they
    count in that user's quotas and their progress reaches that user's sockets."""
    token = _owner.set(Owner(tenant_id, user_id))
    try:
        yield
    finally:
        _owner.reset(token)


def current_job() -> JobContext | None:
    """The running task's JobContext (None outside a Streamer task), for tasks that do
    not take a context: ``current_job().report(50, "halfway")``."""
    return _job.get()


@dataclass(frozen=True, kw_only=True)
class StreamerTaskContext(TaskContext):
    """The ``context`` of a ``takes_context`` task: Django's, plus the request's job."""

    job: JobContext

    def report(
        self, percentage: float, message: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """Report progress to the owner's sockets (raises JobCancelled once cancelled)."""
        self.job.report(percentage, message, details)


class TaskPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=3, max_length=512, pattern=r"^[A-Za-z_][\w.]*$")
    args: list[Any] = []
    kwargs: dict[str, Any] = {}


def _find(module_path: str) -> Task[Any, Any] | None:
    """The task at ``module_path``, only if it is a task of this backend."""
    try:
        found = import_string(module_path)
    except ImportError:
        return None
    if isinstance(found, Task) and isinstance(found.get_backend(), StreamerTaskBackend):
        return found
    return None


@action(
    TASK_ACTION,
    mode="async",
    schema=TaskPayload,
    permission=TASK_PERMISSION,
    timeout_s=settings.STREAMER_TASK_TIMEOUT_S,
    max_attempts=3,
)
def run_task(job: JobContext, payload: TaskPayload) -> Any:
    """Run one ``@task`` function (in a worker thread) and return its JSON result."""
    task = _find(payload.task)
    if task is None:
        raise FinalError("Unknown task")
    token = _job.set(job)
    try:
        if task.takes_context:
            context = StreamerTaskContext(task_result=_result(task, job), job=job)
            value = task.call(context, *payload.args, **payload.kwargs)  # type: ignore[call-arg]
        else:
            value = task.call(*payload.args, **payload.kwargs)
    finally:
        _job.reset(token)
    return normalize_json(value)


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


_STATUS = {
    "PENDING": TaskResultStatus.READY,
    "RETRYING": TaskResultStatus.READY,
    "PROCESSING": TaskResultStatus.RUNNING,
    "COMPLETED": TaskResultStatus.SUCCESSFUL,
    "FAILED": TaskResultStatus.FAILED,
    "CANCELLED": TaskResultStatus.FAILED,
}


def _result(task: Task[Any, Any], job: JobContext) -> TaskResult[Any]:
    """The TaskResult a running task sees in its context."""
    key = RequestKey(job.tenant_id, job.user_id, job.request_id)
    return TaskResult(
        task=task,
        id=key.as_string(),
        status=TaskResultStatus.RUNNING,
        enqueued_at=None,
        started_at=None,
        finished_at=None,
        last_attempted_at=None,
        args=[],
        kwargs={},
        backend=task.backend,
        errors=[],
        worker_ids=["streamer"] * job.attempt,
    )


def _to_result(
    task: Task[Any, Any], key: RequestKey, record: dict[str, Any], args: list[Any], kwargs: Any
) -> TaskResult[Any]:
    """A request's public record as Django's TaskResult."""
    errors = []
    if "error" in record:
        error = record["error"]
        kind = _ERRORS.get(error["code"], TaskFailed)
        errors.append(
            TaskError(
                exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                traceback=f"{error['code']}: {error['message']}",
            )
        )
    result: TaskResult[Any] = TaskResult(
        task=task,
        id=key.as_string(),
        status=_STATUS[record["status"]],
        enqueued_at=_time(record["created_at"]),
        started_at=_time(record["started_at"]),
        finished_at=_time(record["ended_at"]),
        last_attempted_at=_time(record["started_at"]),
        args=args,
        kwargs=kwargs,
        backend=task.backend,
        errors=errors,
        worker_ids=[],
    )
    object.__setattr__(result, "_return_value", record.get("result"))
    return result


class StreamerTaskBackend(BaseTaskBackend):
    """Runs tasks as Streamer requests (see the module docstring). ``enqueue`` must be
    called inside :func:`for_user`; results are read back with ``get_result(id)``."""

    supports_defer = False
    supports_async_task = True
    supports_get_result = True
    supports_priority = False

    def _start(self, task: Task[P, T], args: Any, kwargs: Any) -> tuple[Owner, dict[str, Any]]:
        self.validate_task(task)
        owner = _owner.get()
        if owner is None:
            raise InvalidTaskError(
                "A Streamer task needs an owner: enqueue it inside "
                "streaming.tasks_backend.for_user(tenant_id, user_id)"
            )
        return owner, {"task": task.module_path, "args": list(args), "kwargs": dict(kwargs)}

    def enqueue(self, task: Task[P, T], args: Any, kwargs: Any) -> TaskResult[T]:
        """Store the task as a PENDING request of the current owner (RequestError when
        refused, e.g. QUOTA_EXCEEDED or arguments that are not JSON)."""
        owner, payload = self._start(task, args, kwargs)
        record = requests_api.start(owner.tenant_id, owner.user_id, TASK_ACTION, payload)
        key = RequestKey(owner.tenant_id, owner.user_id, record["request_id"])
        return _to_result(task, key, record, payload["args"], payload["kwargs"])

    async def aenqueue(self, task: Task[P, T], args: Any, kwargs: Any) -> TaskResult[T]:
        owner, payload = self._start(task, args, kwargs)
        record = await requests_api.astart(owner.tenant_id, owner.user_id, TASK_ACTION, payload)
        key = RequestKey(owner.tenant_id, owner.user_id, record["request_id"])
        return _to_result(task, key, record, payload["args"], payload["kwargs"])

    def get_result(self, result_id: str) -> TaskResult[Any]:
        """The task's result as stored now (a TaskResult's ``id`` is its request key)."""
        key = _key(result_id)
        return _stored_result(key, _read(key))

    async def aget_result(self, result_id: str) -> TaskResult[Any]:
        key = _key(result_id)
        return _stored_result(key, await _aread(key))


def _key(result_id: str) -> RequestKey:
    try:
        return RequestKey.from_string(result_id)
    except StoreValidationError:
        raise TaskResultDoesNotExist(result_id) from None


def _read(key: RequestKey) -> RequestRecord:
    try:
        return request_store.get(key)
    except (NotFound, StoreValidationError):
        raise TaskResultDoesNotExist(key.as_string()) from None


async def _aread(key: RequestKey) -> RequestRecord:
    try:
        return await run_storage(request_store.get, key)
    except (NotFound, StoreValidationError):
        raise TaskResultDoesNotExist(key.as_string()) from None


def _stored_result(key: RequestKey, record: RequestRecord) -> TaskResult[Any]:
    """A stored request as the TaskResult of its task (not a task: does not exist)."""
    payload = record.payload if record.action == TASK_ACTION else {}
    task = _find(str(payload.get("task", "")))
    if task is None:
        raise TaskResultDoesNotExist(key.as_string())
    return _to_result(task, key, record.public(), payload["args"], payload["kwargs"])


def cancel(result_id: str) -> TaskResult[Any]:
    """Cancel a task that has not ended (Django's Tasks API has no cancel): its
    request ends CANCELLED and its worker stops it. Returns its result afterwards."""
    key = _key(result_id)
    try:
        requests_api.cancel(key.tenant_id, key.user_id, key.request_id)
    except requests_api.RequestNotFound:
        raise TaskResultDoesNotExist(result_id) from None
    return _stored_result(key, _read(key))
