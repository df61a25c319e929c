"""Actions: the registry product code declares handlers with, and the built-in ones."""

from streaming.actions.registry import (
    ActionContext,
    ActionRegistry,
    ActionSpec,
    FinalError,
    RetryableError,
    action,
    registry,
)

__all__ = [
    "ActionContext",
    "ActionRegistry",
    "ActionSpec",
    "FinalError",
    "RetryableError",
    "action",
    "registry",
]
