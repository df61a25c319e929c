"""Contract of :mod:`storage.heartbeat` at its edges: ages, the one-day window, the
stored TTL and the read cap."""

from __future__ import annotations

import pytest

from storage import base, heartbeat
from storage.heartbeat import ALIVE_MS, HEARTBEAT_TTL_MS, Heartbeat, WorkerHeartbeatModel

T0 = 1_700_000_000_000


@pytest.mark.parametrize(
    ("age_ms", "alive", "age_s"),
    [
        pytest.param(0, True, 0.0, id="now"),
        pytest.param(1_260, True, 1.3, id="one-decimal"),
        pytest.param(ALIVE_MS - 1, True, 30.0, id="just-alive"),
        pytest.param(ALIVE_MS, False, 30.0, id="stale-at-limit"),
        pytest.param(1_000_000, False, 1000.0, id="long-gone"),
    ],
)
def test_age_and_liveness_as_the_dashboard_shows_them(
    age_ms: int, alive: bool, age_s: float
) -> None:
    beat = Heartbeat("w", last_beat=T0, started_at=T0 - 5, jobs=2)
    assert beat.is_alive(T0 + age_ms) is alive
    assert beat.as_dict(T0 + age_ms) == {
        "worker_id": "w",
        "last_beat": T0,
        "started_at": T0 - 5,
        "jobs": 2,
        "alive": alive,
        "last_beat_age_s": age_s,
    }


@pytest.mark.parametrize(
    ("beat_age_ms", "listed"),
    [
        pytest.param(HEARTBEAT_TTL_MS, True, id="exactly-one-day"),
        pytest.param(HEARTBEAT_TTL_MS + 1, False, id="older-than-a-day"),
    ],
)
def test_list_keeps_beats_of_the_last_day_inclusive(
    dynamodb: base.StoreConfig, beat_age_ms: int, listed: bool
) -> None:
    now = T0 + HEARTBEAT_TTL_MS * 2
    heartbeat.beat("w-edge", started_at=T0, jobs=0, now=now - beat_age_ms)
    assert [b.worker_id for b in heartbeat.list_heartbeats(now=now)] == (
        ["w-edge"] if listed else []
    )


def test_a_worker_with_no_jobs_is_listed_with_zero_jobs(dynamodb: base.StoreConfig) -> None:
    heartbeat.beat("idle", started_at=T0, jobs=0, now=T0)
    (listed,) = heartbeat.list_heartbeats(now=T0)
    assert listed == Heartbeat("idle", last_beat=T0, started_at=T0, jobs=0)


def test_beat_stores_a_ttl_one_day_after_the_beat(dynamodb: base.StoreConfig) -> None:
    assert heartbeat.beat("w", started_at=T0, jobs=1, now=T0 + 500) == Heartbeat(
        "w", last_beat=T0 + 500, started_at=T0, jobs=1
    )
    item = WorkerHeartbeatModel.get("w")
    assert item.ttl is not None
    assert int(item.ttl.timestamp()) == (T0 + 500 + HEARTBEAT_TTL_MS) // 1000


def test_list_reads_at_most_max_workers(
    moto_dynamodb: base.StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heartbeat, "MAX_WORKERS", 2)
    for n in range(4):
        heartbeat.beat(f"w{n}", started_at=T0, jobs=0, now=T0 + n)
    assert len(heartbeat.list_heartbeats(now=T0 + 10)) == 2
