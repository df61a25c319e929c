"""Per-connection token buckets (docs/protocol.md §5): 100 frames per 10 s, and 4 MiB of
inbound bytes per 10 s, by default."""

from __future__ import annotations

import time


class TokenBucket:
    """``capacity`` tokens, refilled continuously over ``window_s`` seconds.

    A frame costs one token; for the inbound-bytes limit a frame costs its size.
    """

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: int, window_s: float) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / window_s
        self.tokens = float(capacity)
        self.updated = time.monotonic()

    def take(self, amount: float = 1.0) -> int:
        """Spend ``amount`` tokens: 0 when allowed, else the milliseconds until they are
        free. A refused attempt spends nothing, so a client that waits as told gets
        through; an amount above the capacity costs the whole capacity (it could never
        be served otherwise)."""
        amount = min(amount, self.capacity)
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= amount:
            self.tokens -= amount
            return 0
        return max(1, int((amount - self.tokens) / self.rate * 1000) + 1)


def utf8_size(text: str | bytes | None) -> int:
    """Bytes ``text`` takes on the wire (UTF-8), without encoding ASCII text."""
    if text is None:
        return 0
    if isinstance(text, bytes) or text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))
