"""Fixtures of the client tests: one live stack (dynalite + ``manage.py serve`` with its
in-process worker) for the whole session, started on first use and always stopped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.stack import LiveStack, start_stack


@pytest.fixture(scope="session")
def live_stack() -> Iterator[LiveStack]:
    stack = start_stack()
    try:
        yield stack
    finally:
        stack.stop()
