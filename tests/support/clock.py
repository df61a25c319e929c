"""A hand-moved clock for code that reads ``time.monotonic`` (patch it in where the code
under test looks it up; move ``now`` instead of waiting)."""

from __future__ import annotations


class Clock:
    """Stands still at ``now`` until the test moves it. Callable (to replace
    ``time.monotonic`` or a module's ``monotonic``) and with a ``monotonic`` method (to
    replace a module's ``time``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now
