"""Create and delete every registered table (used by ``manage.py create_tables`` and tests)."""

from __future__ import annotations

import time
from collections.abc import Callable

from botocore.exceptions import ClientError
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
                for index, added in _add_missing_indexes(model):
                    report(
                        f"table {name}: index {index} added"
                        if added
                        else f"table {name}: index {index} missing and this endpoint cannot "
                        "add it to an existing table: `create_tables --delete` then "
                        "`create_tables` recreates it (the table's items are lost)"
                    )
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


def _add_missing_indexes(model: type[Model]) -> list[tuple[str, bool]]:
    """Create the global secondary indexes a model declares and its existing table lacks
    (an index added in a later release: ``create_tables`` stays the one upgrade step).

    One UpdateTable per index, as DynamoDB allows one index creation at a time; waits
    until the table is ACTIVE again after each. Returns (index, added) pairs: dynalite
    accepts the update but never builds the index, which is then reported as not added.
    """
    existing = {
        index["IndexName"] for index in model.describe_table().get("GlobalSecondaryIndexes") or []
    }
    schema = model._get_schema()
    types = {a["AttributeName"]: a["AttributeType"] for a in schema["attribute_definitions"]}
    added = []
    for index in schema["global_secondary_indexes"]:
        if index["index_name"] in existing:
            continue
        keys = [key["AttributeName"] for key in index["key_schema"]]
        create = {
            "IndexName": index["index_name"],
            "KeySchema": _hash_first(index["key_schema"]),
            "Projection": index["projection"],
        }
        client = model._get_connection().connection.client
        definitions = [{"AttributeName": k, "AttributeType": types[k]} for k in keys]
        try:
            client.update_table(
                TableName=model.Meta.table_name,
                AttributeDefinitions=definitions,
                GlobalSecondaryIndexUpdates=[{"Create": create}],
            )
        except ClientError as exc:
            # DynamoDB refuses a throughput for an index of an on-demand table; dynalite
            # (the embedded local server) insists on one: give it the smallest.
            if "provisionedThroughput" not in str(exc):
                raise
            create["ProvisionedThroughput"] = {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}
            client.update_table(
                TableName=model.Meta.table_name,
                AttributeDefinitions=definitions,
                GlobalSecondaryIndexUpdates=[{"Create": create}],
            )
        _wait_active(model)
        now = {i["IndexName"] for i in model.describe_table().get("GlobalSecondaryIndexes") or []}
        added.append((index["index_name"], index["index_name"] in now))
    return added


def _hash_first(key_schema: list[dict[str, str]]) -> list[dict[str, str]]:
    """DynamoDB wants the HASH element first; PynamoDB's schema does not promise it."""
    return sorted(key_schema, key=lambda key: key["KeyType"] != "HASH")


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
