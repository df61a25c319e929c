"""Prometheus metrics whose label values come from a known set.

A label value taken from input (a publisher's frame type, a client's action name, an
error code a handler made up) would add one time series per distinct value: memory in
every process and in Prometheus would grow with whatever clients send. Wrapped metrics
record any value outside their known set as :data:`OTHER`.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

OTHER = "other"

Known = Container[str] | Callable[[], Container[str]]


class BoundedLabels:
    """A labelled prometheus_client metric whose ``labels()`` accepts only known values.

    Each label gets its known values: a container, or a callable returning one (for
    sets that grow at start-up, like registered action names). Everything else is
    recorded as ``other``; ``None`` too.
    """

    def __init__(self, metric: Any, *known: Known) -> None:
        if len(known) != len(metric._labelnames):
            raise ValueError(f"{metric._name}: one known set per label is needed")
        self.metric = metric
        self._known = known

    def labels(self, *values: object) -> Any:
        """The child metric of these values, unknown ones replaced by ``other``."""
        return self.metric.labels(
            *(bounded(value, known) for value, known in zip(values, self._known, strict=True))
        )


def bounded(value: object, known: Known) -> str:
    """``value`` as a label if it is known, else ``other``."""
    allowed = known() if callable(known) else known
    text = str(value) if value is not None else OTHER
    return text if text in allowed else OTHER
