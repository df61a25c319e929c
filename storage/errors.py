"""Typed errors of the storage layer.

The rest of the code catches these, never PynamoDB or botocore exceptions, so that no
library text can leak into a client frame.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every storage error."""


class NotFound(StoreError):
    """The item does not exist (or is not visible to the caller)."""


class AlreadyExists(StoreError):
    """A conditional create found an existing item."""

    def __init__(self, message: str, existing_status: str | None = None) -> None:
        super().__init__(message)
        self.existing_status = existing_status


class InvalidTransition(StoreError):
    """A status change that docs/protocol.md §3 does not allow, or a lost conditional race."""

    def __init__(self, message: str, current_status: str | None = None) -> None:
        super().__init__(message)
        self.current_status = current_status


class ValidationError(StoreError, ValueError):
    """A bad argument, raised before any network call."""


class StorageUnavailable(StoreError):
    """DynamoDB could not be reached (refused, timed out, throttled past our retries)."""
