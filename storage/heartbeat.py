"""Worker heartbeats, in DynamoDB: which workers are alive right now.

Table ``workers`` (prefixed by the store configuration), one item per worker process
run, keyed by ``worker_id`` (``host:pid:random``). A running worker rewrites its item
every :data:`HEARTBEAT_INTERVAL_S` seconds (one PutItem) with the time of the beat, when
it started and how many jobs it is running; a worker that stops cleanly deletes it. A
worker is *alive* while its last beat is less than :data:`ALIVE_MS` old, *stale* after
that (it died, or cannot reach storage). Items carry a DynamoDB TTL one day after their
last beat, so dead workers disappear on their own where the endpoint supports TTL; reads
also skip items older than that.

Reading is a Scan, on purpose: the table is tiny (one item per worker process that beat
in the last day) and only the admin dashboard and ``streamer_stats`` read it, never a
hot path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.models import Model

from storage.base import now_ms, register_model
from storage.error_mapping import storage_call
from storage.validators import MAX_WORKER_ID, require_int, require_text

#: A worker beats this often.
HEARTBEAT_INTERVAL_S = 10.0
#: A worker whose last beat is younger than this is alive (three missed beats: stale).
ALIVE_MS = 30_000
#: A heartbeat item expires (DynamoDB TTL) this long after its last beat.
HEARTBEAT_TTL_MS = 24 * 60 * 60 * 1000
#: At most this many heartbeats are read (the scan stops there).
MAX_WORKERS = 1000


@register_model
class WorkerHeartbeatModel(Model):
    """The last heartbeat of one worker process (times in epoch ms)."""

    class Meta:
        table_name = "workers"

    worker_id = UnicodeAttribute(hash_key=True)
    last_beat = NumberAttribute()
    started_at = NumberAttribute()
    jobs = NumberAttribute(default=0)
    ttl = TTLAttribute(null=True)


@dataclass(frozen=True)
class Heartbeat:
    """What the dashboard shows about one worker."""

    worker_id: str
    last_beat: int
    started_at: int
    jobs: int

    def age_ms(self, now: int) -> int:
        """How long ago the worker last beat."""
        return max(0, now - self.last_beat)

    def is_alive(self, now: int) -> bool:
        """True while the last beat is younger than :data:`ALIVE_MS`."""
        return self.age_ms(now) < ALIVE_MS

    def as_dict(self, now: int) -> dict[str, Any]:
        """A JSON-ready view (``streamer_stats --json``)."""
        return {
            **asdict(self),
            "alive": self.is_alive(now),
            "last_beat_age_s": round(self.age_ms(now) / 1000, 1),
        }


def beat(worker_id: str, *, started_at: int, jobs: int, now: int | None = None) -> Heartbeat:
    """Record that ``worker_id`` is alive (one PutItem); returns what was stored."""
    require_text("worker_id", worker_id, MAX_WORKER_ID)
    require_int("started_at", started_at, 0)
    require_int("jobs", jobs, 0)
    at = now_ms() if now is None else require_int("now", now, 0)
    item = WorkerHeartbeatModel(
        worker_id,
        last_beat=at,
        started_at=started_at,
        jobs=jobs,
        ttl=datetime.fromtimestamp((at + HEARTBEAT_TTL_MS) / 1000, tz=UTC),
    )
    with storage_call("heartbeat.beat"):
        item.save()
    return Heartbeat(worker_id, at, started_at, jobs)


def forget(worker_id: str) -> None:
    """Remove a worker's heartbeat (a clean stop); idempotent."""
    require_text("worker_id", worker_id, MAX_WORKER_ID)
    with storage_call("heartbeat.forget"):
        WorkerHeartbeatModel(worker_id).delete()


def list_heartbeats(now: int | None = None) -> list[Heartbeat]:
    """Every worker that beat within the last day, most recent beat first (a Scan of a
    tiny table, see the module docstring; at most :data:`MAX_WORKERS`)."""
    at = now_ms() if now is None else require_int("now", now, 0)
    oldest = at - HEARTBEAT_TTL_MS
    with storage_call("heartbeat.list"):
        rows = list(WorkerHeartbeatModel.scan(limit=MAX_WORKERS))
    beats = [
        Heartbeat(
            worker_id=row.worker_id,
            last_beat=int(row.last_beat),
            started_at=int(row.started_at),
            jobs=int(row.jobs or 0),
        )
        for row in rows
        if int(row.last_beat) >= oldest
    ]
    return sorted(beats, key=lambda b: (-b.last_beat, b.worker_id))
