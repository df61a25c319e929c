"""Actions: the registry product code declares handlers with, and the built-in ones."""

from streaming.actions.registry import (
    ActionRegistry,
    ActionSpec,
    FinalError,
    RetryableError,
    action,
    registry,
)

__all__ = ["ActionRegistry", "ActionSpec", "FinalError", "RetryableError", "action", "registry"]
