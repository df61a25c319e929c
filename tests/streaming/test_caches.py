"""connections.caches and the bounded caches built on it: lifetimes, bounds, and
thread-safety where a cache is shared by threads."""

from __future__ import annotations

import threading
import time

import pytest

from connections.caches import deadline_cache, expiring_cache
from connections.transports.apigw import CircuitBreaker
from streaming.session import TenantCounts


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    return now


@pytest.mark.parametrize(
    ("lifetime", "elapsed", "kept"),
    [(10.0, 9.9, True), (10.0, 10.0, False), (0.5, 1.0, False), (0.0, 0.0, False)],
)
def test_expiring_cache_lifetime(
    clock: list[float], lifetime: float, elapsed: float, kept: bool
) -> None:
    cache = expiring_cache(10, lambda: lifetime)
    cache["k"] = "v"
    clock[0] += elapsed
    assert (cache.get("k") == "v") is kept


def test_expiring_cache_reads_the_lifetime_when_an_entry_is_stored(clock: list[float]) -> None:
    lifetime = [10.0]
    cache = expiring_cache(10, lambda: lifetime[0])
    cache["long"] = 1
    lifetime[0] = 1.0
    cache["short"] = 2
    clock[0] += 5
    assert ("long" in cache, "short" in cache) == (True, False)


def test_expiring_cache_evicts_the_least_recently_used(clock: list[float]) -> None:
    cache = expiring_cache(3, lambda: 60.0)
    for key in "abc":
        cache[key] = key
    assert cache.get("a") == "a"  # a is now the most recent
    cache["d"] = "d"
    assert sorted(cache) == ["a", "c", "d"]


def test_deadline_cache_update_keeps_its_deadline(clock: list[float]) -> None:
    cache = deadline_cache(10)
    cache["k"] = (clock[0] + 2.0, 1)
    clock[0] += 1.5
    cache["k"] = (cache["k"][0], 2)  # adjusted, same deadline
    clock[0] += 0.6
    assert cache.get("k") is None


def test_tenant_counts_bumps_from_many_threads_are_all_counted() -> None:
    counts = TenantCounts(ttl_s=60.0)
    counts.put("acme", 0)
    threads_count, rounds = 8, 2000
    barrier = threading.Barrier(threads_count)

    def work() -> None:
        barrier.wait()
        for _ in range(rounds):
            counts.bump("acme", 1)
            counts.put(f"other-{threading.get_ident()}", 1)

    threads = [threading.Thread(target=work) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts.get("acme") == threads_count * rounds


def test_breaker_stays_bounded_under_threads_and_can_be_resized() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown_s=60, max_keys=50)
    barrier = threading.Barrier(4)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(500):
            breaker.failure(f"t{n}-{i}")
            breaker.allow(f"t{n}-{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(breaker) == 50
    breaker.failure("last")
    breaker.max_keys = 10
    assert len(breaker) == 10 and breaker.max_keys == 10
    assert not breaker.allow("last"), "the most recent keys are kept"
