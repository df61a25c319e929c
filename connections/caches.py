"""Bounded in-process caches, built on cachetools, with one rule for expiry.

Every cache here holds at most ``maxsize`` entries and evicts the least recently used
one when full. Expiring caches compute each entry's deadline when it is stored, from a
lifetime read at that moment (a setting changed at run time applies to new entries).
cachetools caches are not thread-safe: a cache shared by threads is used under a lock
by its owner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cachetools import TLRUCache


def monotonic() -> float:
    """The caches' clock (``time.monotonic`` looked up at each call, so a test that
    moves that clock moves the caches' too)."""
    return time.monotonic()


def expiring_cache(maxsize: int, lifetime_s: Callable[[], float]) -> TLRUCache[Any, Any]:
    """At most ``maxsize`` entries; each one expires ``lifetime_s()`` seconds after it
    was stored."""
    return TLRUCache(
        maxsize=maxsize, ttu=lambda _key, _value, now: now + lifetime_s(), timer=monotonic
    )


def deadline_cache(maxsize: int) -> TLRUCache[Any, tuple[float, Any]]:
    """At most ``maxsize`` entries of ``(deadline, value)``: each expires at its own
    deadline (on :func:`monotonic`), so an entry can be updated without extending it."""
    return TLRUCache(maxsize=maxsize, ttu=lambda _key, entry, _now: entry[0], timer=monotonic)
