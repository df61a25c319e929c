"""The dedicated storage thread pool (connections/storage_pool.py)."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from connections import storage_pool as pool

WHO = contextvars.ContextVar("who", default="nobody")


@pytest.fixture
def small_pool(settings):
    """A fresh pool of 2 threads for the test."""
    settings.STREAMER_STORAGE_THREADS = 2
    previous, pool._executor = pool._executor, None
    yield
    if pool._executor is not None:
        pool._executor.shutdown(wait=True)
    pool._executor = previous


def describe(a: int, *, b: int) -> tuple[int, int, str, str]:
    return a, b, WHO.get(), threading.current_thread().name


async def test_run_storage_passes_arguments_context_and_result(small_pool) -> None:
    WHO.set("alice")
    a, b, who, thread = await pool.run_storage(describe, 1, b=2)
    assert (a, b, who) == (1, 2, "alice")
    assert thread.startswith("storage")


async def test_run_storage_raises_the_call_s_exception(small_pool) -> None:
    def broken() -> None:
        raise LookupError("not there")

    with pytest.raises(LookupError, match="not there"):
        await pool.run_storage(broken)


async def test_pool_is_bounded_and_separate_from_the_default_executor(small_pool) -> None:
    """Six blocked calls on a 2-thread pool: two run, four wait; meanwhile the default
    executor (asyncio.to_thread) still serves other work; released, all six finish."""
    release = threading.Event()
    lock = threading.Lock()
    running = peak = 0
    both_started = threading.Barrier(3)  # the two pool threads and this test

    def blocked(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if n < 2:
            both_started.wait()
        release.wait()
        with lock:
            running -= 1
        return n

    calls = [asyncio.ensure_future(pool.run_storage(blocked, n)) for n in range(6)]
    await asyncio.to_thread(both_started.wait)
    assert await asyncio.to_thread(lambda: "default executor free") == "default executor free"
    assert peak == 2 and not any(call.done() for call in calls)
    release.set()
    assert sorted(await asyncio.gather(*calls)) == list(range(6))
    assert peak == 2
