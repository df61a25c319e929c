"""Per-connection token bucket (PROTOCOL.md §5: 100 frames per 10 s by default)."""

from __future__ import annotations

import time


class TokenBucket:
    """``capacity`` tokens, refilled continuously over ``window_s`` seconds."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: int, window_s: float) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / window_s
        self.tokens = float(capacity)
        self.updated = time.monotonic()

    def take(self) -> int:
        """Spend one token: 0 when allowed, else the milliseconds until one is free."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0
        return max(1, int((1.0 - self.tokens) / self.rate * 1000) + 1)
