"""Create and delete every registered table (used by ``manage.py create_tables`` and tests)."""

from __future__ import annotations

import time
from collections.abc import Callable

from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from storage.base import registered_models
from storage.error_mapping import storage_call


def create_all(report: Callable[[str], None] = lambda _msg: None) -> list[str]:
    """Create missing tables (idempotent) and enable TTL where the endpoint supports it.

    Returns the table names. ``report`` receives one human-readable line per step.
    """
    names = []
    for model in registered_models():
        name = model.Meta.table_name
        names.append(name)
        with storage_call("create_tables"):
            if model.exists():
                report(f"table {name}: exists")
            else:
                model.create_table(
                    billing_mode="PAY_PER_REQUEST", wait=False, ignore_update_ttl_errors=True
                )
                _wait_active(model)
                report(f"table {name}: created")
            if getattr(model, "_ttl_attribute", lambda: None)() is not None:
                try:
                    model.update_ttl(ignore_update_ttl_errors=False)
                    report(f"table {name}: TTL enabled")
                except PynamoDBException:
                    report(f"table {name}: TTL not supported by this endpoint (expired items stay)")
    return names


def _wait_active(model: type[Model], timeout_s: float = 120.0) -> None:
    """Poll until the table is ACTIVE (PynamoDB's own wait sleeps 2 s per check)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = model.describe_table().get("TableStatus")
        if status == "ACTIVE":
            return
        time.sleep(0.05 if status is None or status == "CREATING" else 0.5)
    raise TimeoutError(f"table {model.Meta.table_name} did not become ACTIVE")


def delete_all(report: Callable[[str], None] = lambda _msg: None) -> None:
    """Delete every registered table that exists."""
    for model in registered_models():
        with storage_call("delete_tables"):
            if model.exists():
                model.delete_table()
                report(f"table {model.Meta.table_name}: deleted")
