"""Builders of server → client frames (docs/protocol.md §2.2).

Each builder returns a plain ``dict`` ready for :func:`protocol.codec.dumps`, with
``type`` and ``timestamp`` (integer milliseconds since the Unix epoch). Optional keys
(``metadata``, ``details``) are left out when ``None``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from protocol.errors import DEFAULT_MESSAGES, ErrorCode, ProtocolError

Frame = dict[str, Any]


def now_ms() -> int:
    """Current time in integer milliseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1_000_000


def response(
    request_id: str,
    data: Any,
    *,
    success: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Frame:
    """Result of a synchronous action."""
    frame: Frame = {
        "type": "response",
        "timestamp": now_ms(),
        "request_id": request_id,
        "success": success,
        "data": data,
    }
    if metadata is not None:
        frame["metadata"] = metadata
    return frame


def acknowledgment(
    request_id: str, message: str = "Request queued", *, action: str | None = None
) -> Frame:
    """An asynchronous action was stored durably and will run. ``action`` is set on the
    acknowledgment a watching connection gets for a request it did not start (1.1)."""
    frame: Frame = {
        "type": "acknowledgment",
        "timestamp": now_ms(),
        "request_id": request_id,
        "status": "queued",
        "message": message,
    }
    if action is not None:
        frame["action"] = action
    return frame


def clamp_percentage(percentage: float) -> float:
    """``percentage`` limited to 0..100 (NaN counts as 0); ints stay ints."""
    if math.isnan(percentage):
        return 0
    if percentage < 0:
        return 0
    if percentage > 100:
        return 100
    return percentage


def progress(
    request_id: str,
    percentage: float,
    message: str = "",
    details: dict[str, Any] | None = None,
) -> Frame:
    """Progress of a running asynchronous action; ``percentage`` is clamped to 0..100."""
    frame: Frame = {
        "type": "progress",
        "timestamp": now_ms(),
        "request_id": request_id,
        "percentage": clamp_percentage(percentage),
        "message": message,
    }
    if details is not None:
        frame["details"] = details
    return frame


def output(request_id: str, seq: int, data: Any) -> Frame:
    """One chunk of a request's output stream (``seq`` from 1, consecutive per request)."""
    return {
        "type": "output",
        "timestamp": now_ms(),
        "request_id": request_id,
        "seq": seq,
        "data": data,
    }


def complete(request_id: str, result: Any, *, metadata: dict[str, Any] | None = None) -> Frame:
    """An asynchronous action finished successfully (terminal frame)."""
    frame: Frame = {
        "type": "complete",
        "timestamp": now_ms(),
        "request_id": request_id,
        "success": True,
        "result": result,
    }
    if metadata is not None:
        frame["metadata"] = metadata
    return frame


def error(
    request_id: str | None,
    code: ErrorCode | str,
    message: str | None = None,
    details: dict[str, Any] | None = None,
) -> Frame:
    """An ``error`` frame; ``message`` defaults to the code's generic client message."""
    code = ErrorCode(code)
    body: dict[str, Any] = {"code": code.value, "message": message or DEFAULT_MESSAGES[code]}
    if details is not None:
        body["details"] = details
    body["retryable"] = code.retryable
    return {
        "type": "error",
        "timestamp": now_ms(),
        "request_id": request_id,
        "error": body,
    }


def error_from(request_id: str | None, exc: ProtocolError) -> Frame:
    """The ``error`` frame for ``exc``; ``request_id=None`` falls back to ``exc.request_id``."""
    rid = request_id if request_id is not None else exc.request_id
    return error(rid, exc.code, exc.message, exc.details)


def pong() -> Frame:
    """Answer to a client ``ping``."""
    return {"type": "pong", "timestamp": now_ms()}
