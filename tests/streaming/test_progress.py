"""ProgressReporter: coalescing (≤10 frames/s, ≤1 write/s), clamping, monotonicity,
flush on close, resilience of its sinks (docs/protocol.md §5, the benchmark budgets)."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

import pytest

from streaming.progress import ProgressReporter
from tests.support.worker import eventually

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")


class Sink:
    """Records (monotonic time, percentage, message, details) of every call."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[float, float, str, Any]] = []
        self.fail = fail

    async def __call__(self, percentage: float, message: str, details: Any) -> None:
        self.calls.append((time.monotonic(), percentage, message, details))
        if self.fail:
            raise RuntimeError("sink is down")

    @property
    def values(self) -> list[float]:
        return [c[1] for c in self.calls]

    @property
    def times(self) -> list[float]:
        return [c[0] for c in self.calls]


def make(**kwargs: Any) -> tuple[ProgressReporter, Sink, Sink]:
    publish, persist = Sink(), Sink()
    reporter = ProgressReporter(asyncio.get_running_loop(), publish, persist, **kwargs)
    return reporter, publish, persist


def assert_spaced(times: list[float], per_window: int, window_s: float) -> None:
    """No more than ``per_window`` calls in any ``window_s`` (20 ms of tolerance for the
    time between the reporter reading its clock and the sink reading it)."""
    for i in range(len(times) - per_window):
        assert times[i + per_window] - times[i] >= window_s - 0.02, (i, times)


def tight_loop(reporter: ProgressReporter, n: int) -> None:
    for i in range(1, n + 1):
        reporter.report(i * 100 / n, f"step {i}")


@pytest.mark.parametrize("source", ["thread", "event loop"])
async def test_100k_reports_are_coalesced_and_the_last_one_delivered(source: str) -> None:
    started = time.monotonic()
    reporter, publish, persist = make()
    n = 100_000
    if source == "thread":
        await asyncio.to_thread(tight_loop, reporter, n)
    else:
        for i in range(1, n + 1):
            reporter.report(i * 100 / n, f"step {i}")
            if i % 500 == 0:
                await asyncio.sleep(0)  # let the drain run now and then
    await reporter.close()
    elapsed = time.monotonic() - started

    assert reporter.reports == n
    assert publish.calls, "no frame at all"
    # ≤ one frame per 100 ms, plus the first one and the flush of close().
    assert len(publish.calls) <= 10 * elapsed + 2, (len(publish.calls), elapsed)
    assert_spaced(publish.times[:-1], 10, 1.0)
    # ≤ one write per second, the first one a second after the start.
    assert len(persist.calls) <= elapsed, (len(persist.calls), elapsed)
    # The last value is never lost, and nothing ever goes down.
    assert publish.calls[-1][1:3] == (100.0, f"step {n}")
    assert publish.values == sorted(publish.values)
    assert persist.values == sorted(persist.values)
    assert reporter.frames_sent == len(publish.calls)
    assert reporter.writes_made == len(persist.calls)


async def test_frames_keep_flowing_while_reports_continue_past_a_second() -> None:
    """Regression: after a frame went out, the drain sleeps until the next *write* slot
    (1 s away); a newly pending frame must wake it, or clients get one frame a second."""
    reporter, publish, persist = make()
    stop_at = time.monotonic() + 2.3

    def keep_reporting() -> None:
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            reporter.report(min(99.0, i / 100), f"tick {i}")
            time.sleep(0.001)

    started = time.monotonic()
    await asyncio.to_thread(keep_reporting)
    reporter.report(100, "done")
    await reporter.close()
    elapsed = time.monotonic() - started

    assert len(persist.calls) >= 2, "writes stopped"
    first_write = persist.times[0]
    before_first_write = [t for t in publish.times if t < first_write]
    # With the wake-up, about ten frames go out in the first second; without it, one.
    assert len(before_first_write) >= 4, publish.times
    between_writes = [t for t in publish.times if persist.times[0] < t < persist.times[1]]
    assert len(between_writes) >= 4, publish.times
    assert len(publish.calls) <= 10 * elapsed + 2
    assert_spaced(publish.times[:-1], 10, 1.0)
    assert_spaced(persist.times, 1, 1.0)
    assert publish.calls[-1][1:3] == (100.0, "done")
    assert publish.values == sorted(publish.values)
    assert persist.values == sorted(persist.values)


@pytest.mark.parametrize(
    ("reports", "expected"),
    [
        ([-5], 0.0),
        ([150], 100.0),
        ([math.inf], 100.0),
        ([-math.inf], 0.0),
        ([math.nan], 0.0),
        ([30, math.nan], 30.0),
        ([30, "not a number"], 30.0),
        ([30, None], 30.0),
        ([30, object()], 30.0),
        ([80, 20], 80.0),
        ([12.5], 12.5),
        ([7], 7.0),
        ([True], 1.0),
        ([99, 101, 50], 100.0),
    ],
)
async def test_values_are_clamped_bad_ones_ignored_and_never_decrease(
    reports: list[Any], expected: float
) -> None:
    reporter, publish, _ = make()
    for value in reports:
        reporter.report(value, "m")
    assert reporter.percentage == expected
    await reporter.close()
    assert publish.values == [expected]  # coalesced: one frame, the latest (clamped) value
    assert isinstance(publish.values[0], float)


async def test_decreasing_and_bad_reports_from_a_thread_never_lower_what_is_sent() -> None:
    reporter, publish, persist = make(frames_per_s=200, writes_per_s=50)
    values: list[Any] = [((i * 37) % 120) - 10 for i in range(3000)]
    values[::97] = [math.nan] * len(values[::97])
    values[::131] = ["bad"] * len(values[::131])

    def feed() -> None:
        for v in values:
            reporter.report(v)
            time.sleep(0.0001)

    await asyncio.to_thread(feed)
    await reporter.close()
    assert len(publish.calls) > 2
    for sink in (publish, persist):
        assert sink.values == sorted(sink.values)
        assert all(0.0 <= v <= 100.0 for v in sink.values)
    assert publish.values[-1] == 100.0 == reporter.percentage


@pytest.mark.parametrize(("flush", "expected"), [(True, [10.0, 60.0]), (False, [10.0])])
async def test_close_flushes_the_pending_frame_unless_told_not_to(
    flush: bool, expected: list[float]
) -> None:
    reporter, publish, persist = make()
    reporter.report(10)
    await eventually(lambda: publish.calls, what="the first frame goes out at once")
    reporter.report(60)  # pending: the next frame slot is 100 ms away
    await reporter.close(flush=flush)
    assert publish.values == expected
    assert persist.calls == []  # the first write slot is a second away
    # After close, reports change the high-water mark but send nothing.
    reporter.report(90)
    await asyncio.sleep(0.15)
    assert publish.values == expected
    assert reporter.percentage == 90.0


async def test_close_of_an_unused_reporter_sends_nothing_and_can_repeat() -> None:
    reporter, publish, persist = make()
    await reporter.close()
    await reporter.close(flush=False)
    await reporter.close()
    assert publish.calls == [] and persist.calls == []


async def test_failing_sinks_do_not_stop_the_reporter(caplog: pytest.LogCaptureFixture) -> None:
    publish, persist = Sink(fail=True), Sink(fail=True)
    reporter = ProgressReporter(
        asyncio.get_running_loop(), publish, persist, frames_per_s=100, writes_per_s=100
    )
    caplog.set_level(logging.WARNING, logger="streaming.progress")
    for value in (10, 20, 30, 40):
        reporter.report(value)
        await asyncio.sleep(0.03)
    reporter.report(50)
    await reporter.close()  # does not raise
    assert publish.values == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert len(persist.calls) >= 2
    assert persist.values == sorted(persist.values)
    assert "progress frame not delivered" in caplog.text
    assert "progress not persisted" in caplog.text


async def test_message_is_truncated_and_details_passed_through() -> None:
    reporter, publish, _ = make()
    reporter.report(5, "x" * 5000, {"rows": 3})
    reporter.report(6, 12345, None)  # a non-string message is stringified
    await reporter.close()
    assert publish.calls[-1][1:] == (6.0, "12345", None)
    reporter2, publish2, _ = make()
    reporter2.report(5, "x" * 5000, {"rows": 3})
    await reporter2.close()
    assert publish2.calls[-1][1:] == (5.0, "x" * 1024, {"rows": 3})


async def test_reports_from_many_threads_at_once() -> None:
    reporter, publish, _ = make()

    def feed(offset: int) -> None:
        for i in range(20_000):
            reporter.report((i + offset) / 250)

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    reporter.report(100)
    await reporter.close()
    elapsed = time.monotonic() - started
    assert reporter.reports == 80_001
    assert publish.values[-1] == 100.0
    assert publish.values == sorted(publish.values)
    assert len(publish.calls) <= 10 * elapsed + 2


async def test_unsaved_is_the_latest_update_storage_does_not_have() -> None:
    reporter, _, persist = make(writes_per_s=50)
    assert reporter.unsaved() is None
    reporter.report(20, "twenty", {"k": 1})
    assert reporter.unsaved() == (20.0, "twenty", {"k": 1})
    await eventually(lambda: persist.calls, what="a write")
    assert reporter.unsaved() is None
    reporter.report(30, "thirty")
    await reporter.close()
    assert reporter.unsaved() == (30.0, "thirty", None)  # close() does not write
