"""Declaring actions: the Python API product developers use.

::

    from pydantic import BaseModel
    from streaming.actions import action

    class Resize(BaseModel):
        url: str
        width: int = 640

    @action("images.resize", mode="async", schema=Resize, permission="images",
            timeout_s=120, max_attempts=3, retry_on=(ConnectionError,))
    def resize(job, payload: Resize):
        job.report(50, "halfway")
        return {"ok": True}

A ``sync`` action answers at once with a ``response`` frame; an ``async`` action is
stored, acknowledged, and run by a worker that streams ``progress`` and ``complete``.
Handlers may be ``def`` or ``async def``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from protocol.errors import ErrorCode, ProtocolError, field_errors, validation_error

if TYPE_CHECKING:
    from protocol.parsing import ClientRequest
    from streaming.session import Session

Mode = Literal["sync", "async"]


@dataclass
class ActionContext:
    """What a synchronous action handler gets besides its payload."""

    session: Session
    request: ClientRequest

    @property
    def tenant_id(self) -> str:
        return self.session.identity.tenant_id

    @property
    def user_id(self) -> str:
        return self.session.identity.user_id


class FinalError(Exception):
    """Raise from a handler to fail the request at once with PROCESSING_FAILED.

    The message is sent to the client: keep it short and free of internals.
    """


class RetryableError(Exception):
    """Raise from a handler to retry the request (while attempts remain)."""


@dataclass(frozen=True)
class ActionSpec:
    """One declared action."""

    name: str
    handler: Callable[..., Any]
    mode: Mode = "sync"
    schema: type[BaseModel] | None = None
    permission: str | None = None
    timeout_s: float = 60.0
    max_attempts: int = 3
    retry_on: tuple[type[BaseException], ...] = ()

    @property
    def is_coroutine(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    def validate(self, payload: dict[str, Any]) -> Any:
        """The payload parsed by the schema; VALIDATION_ERROR listing every field."""
        if self.schema is None:
            return payload
        try:
            return self.schema.model_validate(payload)
        except PydanticValidationError as exc:
            raise validation_error(
                field_errors(exc.errors(include_url=False, include_input=False), "payload")
            ) from None

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether a failure of this action may be retried."""
        return isinstance(exc, (RetryableError, *self.retry_on))


class ActionRegistry:
    """Name → ActionSpec."""

    def __init__(self) -> None:
        self._actions: dict[str, ActionSpec] = {}

    def register(self, spec: ActionSpec) -> ActionSpec:
        """Add an action; a name can be declared once."""
        if spec.name in self._actions:
            raise ValueError(f"action {spec.name!r} is already registered")
        if spec.max_attempts < 1 or spec.timeout_s <= 0:
            raise ValueError("max_attempts must be >= 1 and timeout_s > 0")
        self._actions[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove an action (tests)."""
        self._actions.pop(name, None)

    def get(self, name: str) -> ActionSpec:
        """The action called ``name``; INVALID_ACTION when there is none."""
        spec = self._actions.get(name)
        if spec is None:
            raise ProtocolError(ErrorCode.INVALID_ACTION, "Unknown action", {"action": name})
        return spec

    def __contains__(self, name: object) -> bool:
        """Whether an action of that name is registered (metrics label only those)."""
        return name in self._actions

    def names(self) -> list[str]:
        """Every registered action name."""
        return sorted(self._actions)


registry = ActionRegistry()


def action(
    name: str,
    *,
    mode: Mode = "sync",
    schema: type[BaseModel] | None = None,
    permission: str | None = None,
    timeout_s: float = 60.0,
    max_attempts: int = 3,
    retry_on: tuple[type[BaseException], ...] = (),
    registry: ActionRegistry = registry,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator declaring a handler as an action (see the module docstring)."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        registry.register(
            ActionSpec(name, handler, mode, schema, permission, timeout_s, max_attempts, retry_on)
        )
        return handler

    return decorate
