"""Error codes (docs/protocol.md §4), ProtocolError and validation_error."""

from __future__ import annotations

import pickle

import pytest

from protocol.errors import (
    DEFAULT_MESSAGES,
    RETRYABLE_CODES,
    ErrorCode,
    ProtocolError,
    validation_error,
)

# The §4 table, verbatim.
SPEC_TABLE = [
    ("INVALID_MESSAGE", False),
    ("VALIDATION_ERROR", False),
    ("INVALID_ACTION", False),
    ("FORBIDDEN", False),
    ("NOT_FOUND", False),
    ("DUPLICATE_REQUEST", False),
    ("RATE_LIMITED", True),
    ("QUOTA_EXCEEDED", True),
    ("TIMEOUT", True),
    ("CANCELLED", False),
    ("PROCESSING_FAILED", False),
    ("SERVICE_UNAVAILABLE", True),
    ("INTERNAL_ERROR", False),
]


@pytest.mark.parametrize(("name", "retryable"), SPEC_TABLE)
def test_retryable_matches_spec_table(name: str, retryable: bool) -> None:
    code = ErrorCode(name)
    assert code == name
    assert code.value == name
    assert code.retryable is retryable
    assert (code in RETRYABLE_CODES) is retryable


def test_codes_are_exactly_the_spec_table() -> None:
    assert [c.value for c in ErrorCode] == [name for name, _ in SPEC_TABLE]


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_a_short_default_message(code: ErrorCode) -> None:
    message = DEFAULT_MESSAGES[code]
    assert message
    assert len(message) <= 80
    assert "\n" not in message


@pytest.mark.parametrize(
    ("args", "kwargs", "code", "message", "details", "request_id"),
    [
        (
            (ErrorCode.NOT_FOUND,),
            {},
            ErrorCode.NOT_FOUND,
            DEFAULT_MESSAGES[ErrorCode.NOT_FOUND],
            None,
            None,
        ),
        (("TIMEOUT",), {}, ErrorCode.TIMEOUT, DEFAULT_MESSAGES[ErrorCode.TIMEOUT], None, None),
        (
            (ErrorCode.RATE_LIMITED, "Slow down", {"retry_after_ms": 250}),
            {"request_id": "r1"},
            ErrorCode.RATE_LIMITED,
            "Slow down",
            {"retry_after_ms": 250},
            "r1",
        ),
        (
            (ErrorCode.FORBIDDEN, ""),
            {},
            ErrorCode.FORBIDDEN,
            DEFAULT_MESSAGES[ErrorCode.FORBIDDEN],
            None,
            None,
        ),
    ],
)
def test_protocol_error_attributes(args, kwargs, code, message, details, request_id) -> None:
    exc = ProtocolError(*args, **kwargs)
    assert isinstance(exc, Exception)
    assert exc.code is code
    assert exc.message == message
    assert str(exc) == message
    assert exc.details == details
    assert exc.request_id == request_id
    assert exc.retryable is code.retryable
    assert code.value in repr(exc)


def test_protocol_error_rejects_unknown_code() -> None:
    with pytest.raises(ValueError):
        ProtocolError("NOPE")


@pytest.mark.parametrize(
    "exc",
    [
        ProtocolError(ErrorCode.INTERNAL_ERROR),
        ProtocolError(
            ErrorCode.DUPLICATE_REQUEST, "Already sent", {"status": "PENDING"}, request_id="x"
        ),
    ],
)
def test_protocol_error_pickles(exc: ProtocolError) -> None:
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is ProtocolError
    assert (clone.code, clone.message, clone.details, clone.request_id) == (
        exc.code,
        exc.message,
        exc.details,
        exc.request_id,
    )


@pytest.mark.parametrize(
    ("errors", "kwargs", "message", "request_id"),
    [
        ([], {}, DEFAULT_MESSAGES[ErrorCode.VALIDATION_ERROR], None),
        ([{"field": "action", "message": "is required"}], {}, "Validation failed", None),
        (
            [
                {"field": "id", "message": "bad"},
                {"field": "payload.limit", "message": "must be 1-100"},
            ],
            {"message": "Invalid request", "request_id": "abc"},
            "Invalid request",
            "abc",
        ),
    ],
)
def test_validation_error(errors, kwargs, message, request_id) -> None:
    exc = validation_error(errors, **kwargs)
    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert exc.retryable is False
    assert exc.message == message
    assert exc.request_id == request_id
    assert exc.details == {"errors": errors}
    # A copy, not the caller's list.
    assert exc.details is not None
    assert exc.details["errors"] is not errors
