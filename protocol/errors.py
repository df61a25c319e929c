"""Error codes of the wire protocol (docs/protocol.md §4) and the exception that carries them.

Messages here are written for clients: short, generic, never library exception text.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict


class ErrorCode(enum.StrEnum):
    """Every error code a client can see in ``error.code``."""

    INVALID_MESSAGE = "INVALID_MESSAGE"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    INVALID_ACTION = "INVALID_ACTION"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    DUPLICATE_REQUEST = "DUPLICATE_REQUEST"
    RATE_LIMITED = "RATE_LIMITED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    PROCESSING_FAILED = "PROCESSING_FAILED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @property
    def retryable(self) -> bool:
        """Whether a client may send the same request again later (§4 table)."""
        return self in RETRYABLE_CODES


#: The codes whose ``retryable`` flag is true; every other code is final.
RETRYABLE_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.QUOTA_EXCEEDED,
        ErrorCode.TIMEOUT,
        ErrorCode.SERVICE_UNAVAILABLE,
    }
)

#: Short client-facing message used when no specific message is given.
DEFAULT_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.INVALID_MESSAGE: "Invalid message",
    ErrorCode.VALIDATION_ERROR: "Validation failed",
    ErrorCode.INVALID_ACTION: "Unknown action",
    ErrorCode.FORBIDDEN: "Not allowed",
    ErrorCode.NOT_FOUND: "Request not found",
    ErrorCode.DUPLICATE_REQUEST: "Duplicate request id",
    ErrorCode.RATE_LIMITED: "Too many messages, slow down",
    ErrorCode.QUOTA_EXCEEDED: "Too many active requests, try again when one has finished",
    ErrorCode.TIMEOUT: "Request timed out",
    ErrorCode.CANCELLED: "Request was cancelled",
    ErrorCode.PROCESSING_FAILED: "Request failed",
    ErrorCode.SERVICE_UNAVAILABLE: "Service temporarily unavailable, try again later",
    ErrorCode.INTERNAL_ERROR: "Internal server error",
}


class FieldError(TypedDict):
    """One entry of ``details.errors`` in a ``VALIDATION_ERROR``."""

    field: str
    message: str


class ProtocolError(Exception):
    """A failure that is reported to the client as an ``error`` frame.

    ``request_id`` is the best-effort id of the request the failure is about (``None``
    when the frame could not be parsed at all); ``frames.error_from`` uses it when the
    caller does not pass an id.
    """

    code: ErrorCode
    message: str
    details: dict[str, Any] | None
    request_id: str | None

    def __init__(
        self,
        code: ErrorCode | str,
        message: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
    ) -> None:
        self.code = ErrorCode(code)
        self.message = message or DEFAULT_MESSAGES[self.code]
        self.details = details
        self.request_id = request_id
        super().__init__(self.message)

    @property
    def retryable(self) -> bool:
        return self.code.retryable

    def __repr__(self) -> str:
        return (
            f"ProtocolError({self.code.value!r}, {self.message!r}, {self.details!r}, "
            f"request_id={self.request_id!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the exception picklable (the default would call ProtocolError(message)).
        return (
            _rebuild,
            (self.code.value, self.message, self.details, self.request_id),
        )


def _rebuild(
    code: str, message: str, details: dict[str, Any] | None, request_id: str | None
) -> ProtocolError:
    return ProtocolError(code, message, details, request_id=request_id)


def validation_error(
    errors: list[FieldError],
    *,
    message: str | None = None,
    request_id: str | None = None,
) -> ProtocolError:
    """A ``VALIDATION_ERROR`` listing every failing field in ``details.errors``."""
    return ProtocolError(
        ErrorCode.VALIDATION_ERROR,
        message,
        {"errors": [{"field": e["field"], "message": e["message"]} for e in errors]},
        request_id=request_id,
    )


def field_errors(errors: Iterable[Mapping[str, Any]], *root: str) -> list[FieldError]:
    """``details.errors`` entries from pydantic-style errors (``loc``, ``msg``), each
    field named by its dotted location under ``root`` (e.g. ``payload.width``).

    One conversion for every place that validates with pydantic (action payloads, the
    HTTP API's bodies and query strings), so clients see one format.
    """
    return [
        {"field": ".".join(str(part) for part in (*root, *error["loc"])), "message": error["msg"]}
        for error in errors
    ]
