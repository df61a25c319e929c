"""The Streamer wire protocol (docs/protocol.md): error codes, JSON codec, frame builders and
client-frame parsing. Pure Python: imports nothing from Django, Channels or the rest of
the project.
"""

from protocol import codec, frames
from protocol.errors import (
    DEFAULT_MESSAGES,
    RETRYABLE_CODES,
    ErrorCode,
    FieldError,
    ProtocolError,
    validation_error,
)
from protocol.parsing import ClientRequest, Ping, parse_frame

__all__ = [
    "DEFAULT_MESSAGES",
    "RETRYABLE_CODES",
    "ClientRequest",
    "ErrorCode",
    "FieldError",
    "Ping",
    "ProtocolError",
    "codec",
    "frames",
    "parse_frame",
    "validation_error",
]
