"""The thread pool for storage calls of the real-time path.

PynamoDB is blocking, so the event loop hands each call to a thread. asyncio's default
executor is shared with everything else that uses ``asyncio.to_thread`` in the process;
a burst of slow storage calls there would queue every other user of it behind them.
Storage calls get their own pool, bounded by ``STREAMER_STORAGE_THREADS``: when storage
is slow, calls wait in its queue instead of taking more threads or starving other work.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.conf import settings

P = ParamSpec("P")
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def storage_executor() -> ThreadPoolExecutor:
    """The process-wide storage pool, made on first use with the configured size."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.STREAMER_STORAGE_THREADS, thread_name_prefix="storage"
            )
        return _executor


async def run_storage(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run the blocking storage call ``fn(*args, **kwargs)`` on the storage pool, with
    the caller's context variables (like ``asyncio.to_thread``)."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(storage_executor(), call)
