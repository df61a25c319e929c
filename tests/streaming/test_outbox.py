"""``start_eagerly`` of ``streaming/outbox.py``: a coroutine run at once up to its first
real wait, then on in a task exactly as a task would run it. (The outbox's limits and
order are tested with the consumer's backpressure: ``test_consumer_backpressure.py``.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streaming.outbox import start_eagerly


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_coroutine_that_never_waits_finishes_in_the_callers_step() -> None:
    done: list[str] = []

    async def quick() -> None:
        done.append("sent")

    assert start_eagerly(quick()) is None
    assert done == ["sent"]  # before any turn of the loop


@pytest.mark.parametrize(
    ("outcome", "seen"),
    [("result", ["before", "after: 42"]), ("error", ["before", "caught: boom"])],
)
async def test_a_coroutine_that_waits_goes_on_in_a_task_and_sees_the_outcome(
    outcome: str, seen: list[str]
) -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    log: list[str] = []

    async def writer() -> None:
        log.append("before")
        try:
            log.append(f"after: {await future}")
        except ValueError as exc:
            log.append(f"caught: {exc}")

    task = start_eagerly(writer())
    assert task is not None and log == ["before"]
    await turns()
    assert not task.done()
    if outcome == "result":
        future.set_result(42)
    else:
        future.set_exception(ValueError("boom"))
    await task
    assert log == seen


async def test_a_bare_yield_and_an_event_wait_are_waited_through() -> None:
    gate = asyncio.Event()
    log: list[str] = []

    async def writer() -> None:
        await asyncio.sleep(0)
        log.append("yielded")
        await gate.wait()
        log.append("opened")

    task = start_eagerly(writer())
    assert task is not None
    await turns()
    assert log == ["yielded"]
    gate.set()
    await task
    assert log == ["yielded", "opened"]


@pytest.mark.parametrize("swallows", [False, True])
async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits(swallows: bool) -> None:
    gate = asyncio.Event()
    log: list[Any] = []

    async def writer() -> None:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            log.append("cancelled")
            if not swallows:
                raise
            log.append("went on")
        finally:
            log.append("cleaned up")

    task = start_eagerly(writer())
    assert task is not None
    await turns()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() is not swallows
    assert log == (
        ["cancelled", "went on", "cleaned up"] if swallows else ["cancelled", "cleaned up"]
    )
