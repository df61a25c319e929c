"""protocol.frames: server → client frame builders (docs/protocol.md §2.2)."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from protocol import codec, frames
from protocol.errors import DEFAULT_MESSAGES, ErrorCode, ProtocolError, validation_error

FIXED_NS = 1_700_000_000_123_456_789
FIXED_MS = 1_700_000_000_123


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames.time, "time_ns", lambda: FIXED_NS)


def test_now_ms_is_integer_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    value = frames.now_ms()
    after = time.time_ns() // 1_000_000
    assert isinstance(value, int)
    assert before <= value <= after


def test_now_ms_truncates_nanoseconds(fixed_clock: None) -> None:
    assert frames.now_ms() == FIXED_MS


BUILDERS: list[tuple[str, Any, dict[str, Any]]] = [
    (
        "response",
        lambda: frames.response("r1", {"echo": {}}),
        {"type": "response", "request_id": "r1", "success": True, "data": {"echo": {}}},
    ),
    (
        "response-failure-metadata",
        lambda: frames.response("r1", None, success=False, metadata={"trace": "t"}),
        {
            "type": "response",
            "request_id": "r1",
            "success": False,
            "data": None,
            "metadata": {"trace": "t"},
        },
    ),
    (
        "acknowledgment",
        lambda: frames.acknowledgment("r2"),
        {
            "type": "acknowledgment",
            "request_id": "r2",
            "status": "queued",
            "message": "Request queued",
        },
    ),
    (
        "acknowledgment-message",
        lambda: frames.acknowledgment("r2", "Queued behind 3"),
        {
            "type": "acknowledgment",
            "request_id": "r2",
            "status": "queued",
            "message": "Queued behind 3",
        },
    ),
    (
        "progress",
        lambda: frames.progress("r3", 42.5),
        {"type": "progress", "request_id": "r3", "percentage": 42.5, "message": ""},
    ),
    (
        "progress-details",
        lambda: frames.progress("r3", 10, "step 1", {"step": 1}),
        {
            "type": "progress",
            "request_id": "r3",
            "percentage": 10,
            "message": "step 1",
            "details": {"step": 1},
        },
    ),
    (
        "complete",
        lambda: frames.complete("r4", {"rows": 3}),
        {"type": "complete", "request_id": "r4", "success": True, "result": {"rows": 3}},
    ),
    (
        "complete-metadata",
        lambda: frames.complete("r4", [1], metadata={"m": 1}),
        {
            "type": "complete",
            "request_id": "r4",
            "success": True,
            "result": [1],
            "metadata": {"m": 1},
        },
    ),
    (
        "error",
        lambda: frames.error("r5", ErrorCode.NOT_FOUND),
        {
            "type": "error",
            "request_id": "r5",
            "error": {
                "code": "NOT_FOUND",
                "message": DEFAULT_MESSAGES[ErrorCode.NOT_FOUND],
                "retryable": False,
            },
        },
    ),
    (
        "error-details",
        lambda: frames.error("r5", "RATE_LIMITED", "Slow down", {"retry_after_ms": 100}),
        {
            "type": "error",
            "request_id": "r5",
            "error": {
                "code": "RATE_LIMITED",
                "message": "Slow down",
                "details": {"retry_after_ms": 100},
                "retryable": True,
            },
        },
    ),
    (
        "error-null-id",
        lambda: frames.error(None, ErrorCode.INVALID_MESSAGE),
        {
            "type": "error",
            "request_id": None,
            "error": {"code": "INVALID_MESSAGE", "message": "Invalid message", "retryable": False},
        },
    ),
    ("pong", frames.pong, {"type": "pong"}),
]


@pytest.mark.parametrize(
    ("build", "expected"), [b[1:] for b in BUILDERS], ids=[b[0] for b in BUILDERS]
)
def test_builder_keys_and_values(fixed_clock: None, build, expected: dict[str, Any]) -> None:
    frame = build()
    assert frame == {**expected, "timestamp": FIXED_MS}
    assert type(frame["timestamp"]) is int
    # Optional keys are absent (not null) when not given.
    for optional in ("metadata", "details"):
        if optional not in expected:
            assert optional not in frame
    # Every frame encodes.
    assert codec.loads(codec.dumps(frame)) == frame


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (-5, 0),
        (-0.1, 0),
        (0, 0),
        (33.3, 33.3),
        (100, 100),
        (100.01, 100),
        (1e9, 100),
        (math.inf, 100),
        (-math.inf, 0),
        (math.nan, 0),
    ],
)
def test_progress_percentage_is_clamped(given: float, expected: float) -> None:
    frame = frames.progress("r", given)
    assert frame["percentage"] == expected
    assert 0 <= frame["percentage"] <= 100
    assert frames.clamp_percentage(given) == expected


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_frame_for_every_code(code: ErrorCode) -> None:
    frame = frames.error("id", code)
    assert frame["error"]["code"] == code.value
    assert type(frame["error"]["code"]) is str
    assert frame["error"]["retryable"] is code.retryable
    assert frame["error"]["message"] == DEFAULT_MESSAGES[code]


@pytest.mark.parametrize(
    ("request_id", "exc", "expected_id", "expected_error"),
    [
        (
            "given",
            ProtocolError(ErrorCode.TIMEOUT, request_id="carried"),
            "given",
            {"code": "TIMEOUT", "message": "Request timed out", "retryable": True},
        ),
        (
            None,
            ProtocolError(
                ErrorCode.DUPLICATE_REQUEST, details={"status": "PENDING"}, request_id="c"
            ),
            "c",
            {
                "code": "DUPLICATE_REQUEST",
                "message": DEFAULT_MESSAGES[ErrorCode.DUPLICATE_REQUEST],
                "details": {"status": "PENDING"},
                "retryable": False,
            },
        ),
        (
            None,
            validation_error([{"field": "action", "message": "is required"}]),
            None,
            {
                "code": "VALIDATION_ERROR",
                "message": "Validation failed",
                "details": {"errors": [{"field": "action", "message": "is required"}]},
                "retryable": False,
            },
        ),
    ],
)
def test_error_from(request_id, exc, expected_id, expected_error) -> None:
    frame = frames.error_from(request_id, exc)
    assert frame["type"] == "error"
    assert frame["request_id"] == expected_id
    assert frame["error"] == expected_error
    codec.dumps(frame)


def test_error_rejects_unknown_code() -> None:
    with pytest.raises(ValueError):
        frames.error("r", "NOT_A_CODE")
