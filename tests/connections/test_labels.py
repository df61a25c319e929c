"""Every metric label takes values from a fixed set; anything else is "other"."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from connections.labels import OTHER, BoundedLabels, bounded
from connections.manager import SENDS
from streaming.actions.registry import registry
from streaming.metrics import CONNECTS, ERRORS, FRAMES_IN, FRAMES_OUT, REQUEST_SECONDS

pytestmark = pytest.mark.usefixtures("asgi_settings")


def _labels_of(metric: BoundedLabels, *values: object) -> tuple[str, ...]:
    child = metric.labels(*values)
    # The child is keyed by its label values in the parent metric.
    return next(key for key, value in metric.metric._metrics.items() if value is child)


@pytest.mark.parametrize(
    ("metric", "values", "expected"),
    [
        (FRAMES_OUT, ("response",), ("response",)),
        (FRAMES_OUT, ("message",), ("message",)),
        (FRAMES_OUT, ("custom-type-42",), (OTHER,)),
        (FRAMES_OUT, (None,), (OTHER,)),
        (FRAMES_IN, ("request",), ("request",)),
        (FRAMES_IN, ("auth.whatever",), (OTHER,)),
        (ERRORS, ("RATE_LIMITED",), ("RATE_LIMITED",)),
        (ERRORS, ("MADE_UP_CODE",), (OTHER,)),
        (CONNECTS, ("accepted",), ("accepted",)),
        (CONNECTS, (4401,), ("4401",)),
        (CONNECTS, (4999,), (OTHER,)),
        (REQUEST_SECONDS, ("echo", "COMPLETED"), ("echo", "COMPLETED")),
        (REQUEST_SECONDS, ("never.registered", "COMPLETED"), (OTHER, "COMPLETED")),
        (REQUEST_SECONDS, ("echo", "WEIRD"), ("echo", OTHER)),
        (SENDS, ("channels", "delivered"), ("channels", "delivered")),
        (SENDS, ("carrier-pigeon", "lost"), (OTHER, OTHER)),
    ],
)
def test_label_values_are_bounded(metric, values, expected) -> None:
    assert _labels_of(metric, *values) == expected


def test_action_labels_follow_the_registry() -> None:
    """An action registered later (product code at start-up) gets its own label."""
    from streaming.actions import action

    assert bounded("metrics.late", registry) == OTHER

    @action("metrics.late")
    async def late(ctx, payload):  # pragma: no cover - never called
        return {}

    try:
        assert bounded("metrics.late", registry) == "metrics.late"
    finally:
        registry.unregister("metrics.late")


def test_many_distinct_values_make_one_series() -> None:
    collectors = CollectorRegistry()
    metric = BoundedLabels(Counter("t_frames", "t", ["type"], registry=collectors), {"a"})
    for n in range(200):
        metric.labels(f"t{n}").inc()
    metric.labels("a").inc()
    lines = [
        x
        for x in generate_latest(collectors).decode().splitlines()
        if x.startswith("t_frames_total{")
    ]
    assert sorted(lines) == ['t_frames_total{type="a"} 1.0', 't_frames_total{type="other"} 200.0']


def test_one_known_set_per_label() -> None:
    with pytest.raises(ValueError, match="one known set per label"):
        BoundedLabels(Counter("t_two", "t", ["a", "b"], registry=CollectorRegistry()), {"x"})
