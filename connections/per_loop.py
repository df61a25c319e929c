"""State kept per event loop: the gathering batchers (registrations, users' counts) serve
every loop of the process (each server thread, each test thread) without sharing
futures between loops."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """One ``T`` per event loop, made by ``factory`` on first use and dropped with the loop."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self, loop: asyncio.AbstractEventLoop) -> T:
        """The state of ``loop``."""
        with self._lock:
            state = self._states.get(loop)
            if state is None:
                state = self._states[loop] = self._factory()
            return state
