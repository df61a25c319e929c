"""streaming/session.py: DeliveryGuard (the per-connection ordering guarantees of
docs/protocol.md §6), the tenant connection counts, opening a session."""

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


# --- output frames (docs/protocol.md 1.1 §2.2) -----------------------------------------------


def out(seq: int, replay: str | None = None, rid: str = "r") -> dict:
    return {
        "frame_type": "output",
        "request_id": rid,
        "seq": seq,
        "text": f"o{seq}",
        "replay": replay,
    }


def end(kind: str = "complete", rid: str = "r") -> dict:
    return {"frame_type": kind, "request_id": rid, "text": kind}


def admitted(guard: DeliveryGuard, messages: list) -> list[str]:
    sent: list[str] = []
    for message in messages:
        if message == "replay from 2":
            guard.expect_output("r", 2)
        elif message == "end replay":
            sent.extend(guard.end_replay("r"))
        elif message == "final":
            guard.mark_final("r")
        else:
            sent.extend(guard.admit(message))
    return sent


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        # live frames in order pass; a repeated or older seq is dropped
        ([out(1), out(2), out(2), out(1), out(3)], ["o1", "o2", "o3"]),
        # the first frame seen on a connection sets where it starts
        ([out(7), out(8)], ["o7", "o8"]),
        # without a replay, a gap (a frame lost upstream) does not stop the stream
        ([out(1), out(3)], ["o1", "o3"]),
        # nothing live after the terminal frame
        ([out(1), end(), out(2)], ["o1", "complete"]),
        # replay: live frames ahead of it wait, the replay fills in, duplicates go
        (
            ["replay from 2", out(5), out(6), out(3, "more"), out(4, "more"), out(5, "last")],
            ["o3", "o4", "o5", "o6"],
        ),
        # a live frame at the replay's start passes at once
        (["replay from 2", out(3), out(3, "more"), out(4, "last")], ["o3", "o4"]),
        # the terminal frame waits for the end of the replay
        (
            ["replay from 2", out(4), end(), out(3, "more"), out(4, "last")],
            ["o3", "o4", "complete"],
        ),
        (["replay from 2", end("error"), end(), "end replay"], ["error"]),
        # a replay that ends with a gap releases what waited, in order
        (["replay from 2", out(6), out(5), "end replay", out(7)], ["o5", "o6", "o7"]),
        # a finished request still gets its replay, never live frames
        (["replay from 2", "final", out(3, "more"), out(4), out(4, "last")], ["o3", "o4"]),
        # ending a replay that is not running sends nothing
        (["end replay", out(1)], ["o1"]),
        # progress and other requests are unaffected
        (
            [
                out(1),
                {"frame_type": "progress", "request_id": "r", "percentage": 5, "text": "p"},
                out(1, rid="s"),
            ],
            ["o1", "p", "o1"],
        ),
    ],
)
def test_output_order(messages: list, expected: list[str]) -> None:
    assert admitted(DeliveryGuard(), messages) == expected


def test_frames_held_behind_a_replay_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DeliveryGuard, "MAX_HELD", 2)
    guard = DeliveryGuard()
    sent = admitted(
        guard, ["replay from 2", out(5), out(6), out(7), out(3, "more"), out(4, "last")]
    )
    assert sent == ["o3", "o4", "o5", "o6"]


def test_output_state_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DeliveryGuard, "MAX_REMEMBERED", 3)
    guard = DeliveryGuard()
    for rid in "abcde":
        guard.admit(out(5, rid=rid))
    assert guard.admit(out(5, rid="a")) == ["o5"]  # "a" was forgotten: starts afresh
    assert guard.admit(out(5, rid="e")) == []


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
