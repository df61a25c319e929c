"""streaming/session.py: DeliveryGuard (the per-connection ordering guarantees of
PROTOCOL.md §2.2), the tenant connection counts, opening a session."""

from __future__ import annotations

import pytest

from connections.manager import Target
from streaming.session import DeliveryGuard, TenantCounts

pytestmark = pytest.mark.usefixtures("asgi_settings")


def replay(guard: DeliveryGuard, frames: list[tuple[str, str | None, float | None]]) -> list[bool]:
    return [guard.allow(kind, rid, pct) for kind, rid, pct in frames]


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        # progress never goes down; equal is fine (a repeated message)
        (
            [
                ("progress", "r", 10),
                ("progress", "r", 5),
                ("progress", "r", 10),
                ("progress", "r", 50),
            ],
            [True, False, True, True],
        ),
        ([("progress", "r", 0), ("progress", "r", None)], [True, True]),
        ([("progress", "r", None), ("progress", "r", 0.0)], [True, True]),
        # exactly one terminal: complete then error, error then complete
        ([("complete", "r", None), ("error", "r", None)], [True, False]),
        ([("error", "r", None), ("complete", "r", None)], [True, False]),
        ([("complete", "r", None), ("complete", "r", None)], [True, False]),
        # nothing after the terminal
        (
            [("progress", "r", 10), ("complete", "r", None), ("progress", "r", 100)],
            [True, True, False],
        ),
        ([("error", "r", None), ("response", "r", None)], [True, False]),
        # requests are independent
        (
            [
                ("progress", "a", 50),
                ("progress", "b", 10),
                ("complete", "a", None),
                ("progress", "b", 20),
            ],
            [True, True, True, True],
        ),
        # frames about no request are never filtered
        ([("pong", None, None), ("error", None, None), ("error", None, None)], [True, True, True]),
        # non-terminal, non-progress frames pass and do not end the request
        (
            [("acknowledgment", "r", None), ("response", "r", None), ("progress", "r", 1)],
            [True, True, True],
        ),
    ],
)
def test_allow(frames, expected) -> None:
    assert replay(DeliveryGuard(), frames) == expected


def test_mark_final_stops_everything() -> None:
    guard = DeliveryGuard()
    assert guard.allow("progress", "r", 40)
    guard.mark_final("r")
    assert replay(
        guard, [("progress", "r", 90), ("complete", "r", None), ("error", "r", None)]
    ) == [
        False,
        False,
        False,
    ]
    assert guard.allow("progress", "other", 1)


def test_progress_resets_nothing_for_other_connections() -> None:
    one, two = DeliveryGuard(), DeliveryGuard()
    assert one.allow("progress", "r", 80)
    assert two.allow("progress", "r", 20), "each connection has its own guard"


def test_finished_memory_is_bounded() -> None:
    guard = DeliveryGuard()
    limit = DeliveryGuard.MAX_REMEMBERED
    for i in range(limit * 3):
        guard.allow("complete", f"r{i}", None)
    assert len(guard._finished) == limit
    # the most recent ones are remembered
    assert not guard.allow("progress", f"r{limit * 3 - 1}", 1)
    assert not guard.allow("complete", f"r{limit * 2}", None)


def test_progress_memory_is_bounded() -> None:
    """Requests whose terminal frame never reaches this connection do not leak."""
    guard = DeliveryGuard()
    limit = DeliveryGuard.MAX_REMEMBERED
    for i in range(limit * 3):
        assert guard.allow("progress", f"r{i}", 50)
    assert len(guard._progress) <= limit
    # the most recent requests are still guarded
    assert not guard.allow("progress", f"r{limit * 3 - 1}", 10)


def test_recently_updated_progress_is_kept() -> None:
    guard = DeliveryGuard()
    limit = DeliveryGuard.MAX_REMEMBERED
    assert guard.allow("progress", "busy", 60)
    for i in range(limit * 2):
        guard.allow("progress", f"r{i}", 1)
        if i % 100 == 0:
            assert guard.allow("progress", "busy", 60)
    assert not guard.allow("progress", "busy", 59)


def test_terminal_clears_progress_entry() -> None:
    guard = DeliveryGuard()
    guard.allow("progress", "r", 30)
    guard.allow("complete", "r", None)
    assert "r" not in guard._progress


# --- connection counts ------------------------------------------------------------------


def test_tenant_counts(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr("streaming.session.time.monotonic", lambda: now[0])
    counts = TenantCounts(ttl_s=2.0, max_tenants=2)
    assert counts.get("a") is None
    counts.bump("a", 1)  # nothing cached: nothing to adjust
    assert counts.get("a") is None
    counts.put("a", 5)
    counts.bump("a", 1)
    assert counts.get("a") == 6
    counts.bump("a", -10)
    assert counts.get("a") == 0, "never negative"
    now[0] += 2.5
    assert counts.get("a") is None, "stale after ttl"
    counts.put("b", 1)
    counts.put("c", 1)  # over max_tenants: the cache starts over
    assert counts.get("a") is None and counts.get("c") == 1


# --- opening a session ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_open_session_target(live) -> None:
    from streaming.auth import Identity
    from streaming.session import close_session, open_session

    identity = Identity("acme", "alice", frozenset())
    session = await open_session(identity, connection_id="c1", transport="channels", address="a")
    assert session.target == Target("c1", "channels", "a")
    assert session.limiter.capacity == 100
    await close_session(session)
