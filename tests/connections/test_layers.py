"""The Redis-less channel layer's sweep of expired messages (``connections/layers.py``).

Which sockets a layer reaches is tested with the ops commands that rely on it
(``test_ops_reach.py``). Here: expired messages are still dropped, only no longer on
every ``receive()`` (the clock the sweep reads is moved by hand, not waited for).
"""

from __future__ import annotations

import asyncio

import pytest

from connections import layers
from connections.layers import SWEEP_INTERVAL_S, ProcessChannelLayer
from tests.support.clock import Clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(layers, "monotonic", clock)
    return clock


async def receive_or_none(layer: ProcessChannelLayer, channel: str) -> dict | None:
    """The next message of ``channel``, or None when it holds none."""
    try:
        return await asyncio.wait_for(layer.receive(channel), 0.05)
    except TimeoutError:
        return None


async def sweep(layer: ProcessChannelLayer) -> None:
    """A receive on an unrelated channel, which is what runs the layer's sweep."""
    await receive_or_none(layer, "streamer.unrelated")


@pytest.mark.parametrize(
    ("advance_s", "kept"),
    [
        (0.0, True),  # the sweep ran a moment ago: the expired message is still there
        (SWEEP_INTERVAL_S / 2, True),
        (SWEEP_INTERVAL_S, False),  # due again: the expired message is dropped
        (SWEEP_INTERVAL_S * 10, False),
    ],
)
async def test_expired_messages_are_dropped_by_the_next_due_sweep(
    clock: Clock, advance_s: float, kept: bool
) -> None:
    layer = ProcessChannelLayer(expiry=-1)  # every message is expired when sent
    await sweep(layer)  # the first sweep runs at once
    await layer.send("streamer.jobs", {"type": "job", "n": 1})
    clock.now += advance_s
    await sweep(layer)
    # Reading it runs no sweep either (none is due right after the previous one).
    assert (await receive_or_none(layer, "streamer.jobs") is not None) is kept


@pytest.mark.parametrize("receives", [1, 10, 500])
async def test_many_receives_within_an_interval_sweep_once(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, receives: int
) -> None:
    layer = ProcessChannelLayer()
    swept: list[float] = []
    stock = layers.InMemoryChannelLayer._clean_expired
    monkeypatch.setattr(
        layers.InMemoryChannelLayer,
        "_clean_expired",
        lambda self: (swept.append(clock.now), stock(self))[-1],
    )
    for i in range(receives):
        await layer.send(f"streamer.c{i}", {"type": "x"})
        assert await layer.receive(f"streamer.c{i}") == {"type": "x"}
    assert swept == [1000.0]
    clock.now += SWEEP_INTERVAL_S
    await layer.send("streamer.last", {"type": "x"})
    await layer.receive("streamer.last")
    assert swept == [1000.0, 1000.0 + SWEEP_INTERVAL_S]
