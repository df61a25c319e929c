"""Request store tests, and a speed-up they share (test setup only, no behaviour change).

* Every PynamoDB connection builds a fresh botocore session, which parses the DynamoDB
  service JSON again (~0.2 s per table per test, and per thread): share one loader.
* ``Model.create_table(wait=True)`` sleeps 2 s whenever the first DescribeTable still
  says CREATING (dynalite often does): poll every 20 ms instead.

The proper fix belongs in connections/store (shared loader) and tables.create_all
(short polling); until then these tests apply it to themselves.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from types import SimpleNamespace

import botocore.loaders
import botocore.session
import pynamodb.connection.base
import pynamodb.models
import pytest


@contextlib.contextmanager
def fast_pynamodb_setup() -> Iterator[None]:
    """Apply both speed-ups for the duration of the block."""
    loader = botocore.loaders.create_loader()

    def session() -> botocore.session.Session:
        new = botocore.session.get_session()
        new.register_component("data_loader", loader)
        return new

    def short_sleep(seconds: float) -> None:
        time.sleep(min(seconds, 0.02))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pynamodb.connection.base, "get_session", session)
        patch.setattr(pynamodb.models, "time", SimpleNamespace(sleep=short_sleep))
        yield
