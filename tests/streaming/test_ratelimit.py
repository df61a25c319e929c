"""The per-connection token bucket (docs/protocol.md §5: 100 frames per 10 s)."""

from __future__ import annotations

import pytest

import streaming.ratelimit
from streaming.ratelimit import TokenBucket
from tests.support.clock import Clock

pytestmark = pytest.mark.usefixtures("asgi_settings")


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(streaming.ratelimit, "time", fake)
    return fake


@pytest.mark.parametrize(("capacity", "window"), [(100, 10), (3, 10), (1, 1), (50, 60)])
def test_burst_of_capacity_then_limited(clock, capacity, window) -> None:
    bucket = TokenBucket(capacity, window)
    assert [bucket.take() for _ in range(capacity)] == [0] * capacity
    wait = bucket.take()
    per_token_ms = window / capacity * 1000
    assert per_token_ms <= wait <= per_token_ms + 1


def test_refills_over_time(clock) -> None:
    bucket = TokenBucket(100, 10)  # one token every 100 ms
    for _ in range(100):
        bucket.take()
    assert bucket.take() > 0
    clock.now += 0.1
    assert bucket.take() == 0
    assert bucket.take() > 0
    clock.now += 0.05
    assert 45 <= bucket.take() <= 51, "half a token accrued: about 50 ms to go"


def test_refill_is_capped_at_capacity(clock) -> None:
    bucket = TokenBucket(3, 10)
    clock.now += 3600
    assert [bucket.take() for _ in range(4)][:3] == [0, 0, 0]
    assert bucket.take() > 0


def test_limited_attempts_do_not_spend_tokens(clock) -> None:
    bucket = TokenBucket(2, 2)  # one per second
    bucket.take(), bucket.take()
    waits = [bucket.take() for _ in range(5)]
    assert all(w > 0 for w in waits)
    clock.now += 1.0
    assert bucket.take() == 0


def test_wait_shrinks_as_time_passes(clock) -> None:
    bucket = TokenBucket(1, 10)
    bucket.take()
    first = bucket.take()
    clock.now += 4
    second = bucket.take()
    assert first > second > 0
    assert first - second == pytest.approx(4000, abs=2)
