"""``manage.py create_tables``: idempotent creation, --delete, and a clear error when
DynamoDB cannot be reached."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError

from storage import base, localserver, tables


def run(*args: str) -> str:
    out = StringIO()
    call_command("create_tables", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def table_names() -> list[str]:
    names = [model.Meta.table_name for model in base.registered_models()]
    assert names, "no DynamoDB model registered: connections app did not load its models"
    return names


def test_existing_tables_are_left_alone(moto_dynamodb: base.StoreConfig) -> None:
    # The fixture already created every table: a second creation is a no-op.
    output = run()
    for name in table_names():
        assert f"table {name}: exists" in output
        assert f"table {name}: created" not in output
    assert f"{len(table_names())} table(s) ready" in output


def test_delete_then_create_then_create_again(moto_dynamodb: base.StoreConfig) -> None:
    names = table_names()
    assert all(name.startswith("test-") for name in names)

    deleted = run("--delete")
    for name in names:
        assert f"table {name}: deleted" in deleted
    assert not any(model.exists() for model in base.registered_models())

    # Deleting again finds nothing to delete and does not fail.
    again = run("--delete")
    assert ": deleted" not in again.replace("' deleted", "")

    created = run()
    for name in names:
        assert f"table {name}: created" in created
    assert all(model.exists() for model in base.registered_models())

    second = run()
    for name in names:
        assert f"table {name}: exists" in second
    assert ": created" not in second


def test_unreachable_endpoint_is_a_command_error() -> None:
    table_names()
    endpoint = f"http://127.0.0.1:{localserver.free_port()}"
    base.configure(
        base.StoreConfig(
            endpoint_url=endpoint,
            table_prefix="unreachable",
            connect_timeout_s=1,
            read_timeout_s=1,
            max_retry_attempts=0,
        )
    )
    with pytest.raises(CommandError) as excinfo:
        run()
    message = str(excinfo.value)
    assert endpoint in message
    assert "not reachable" in message

    with pytest.raises(CommandError):
        run("--delete")


def test_help_says_what_it_does() -> None:
    command = load_command_class("connections", "create_tables")
    text = command.create_parser("manage.py", "create_tables").format_help()
    assert "Create every DynamoDB table" in text
    assert "--delete" in text


def test_an_index_added_in_a_later_release_is_created_on_an_existing_table(
    dynamodb: base.StoreConfig,
) -> None:
    from storage.connection import ConnectionModel

    # The connections table as an earlier release created it: without ``by_expiry``.
    ConnectionModel.delete_table()
    schema = ConnectionModel._get_schema()
    old = [i for i in schema["global_secondary_indexes"] if i["index_name"] != "by_expiry"]
    keys = {k["AttributeName"] for i in old for k in i["key_schema"]} | {"connection_id"}
    ConnectionModel._get_connection().connection.client.create_table(
        TableName=ConnectionModel.Meta.table_name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=tables._hash_first(schema["key_schema"]),
        AttributeDefinitions=[
            a for a in schema["attribute_definitions"] if a["AttributeName"] in keys
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": i["index_name"],
                "KeySchema": tables._hash_first(i["key_schema"]),
                "Projection": i["projection"],
            }
            for i in old
        ],
    )

    output = run()

    name = ConnectionModel.Meta.table_name
    indexes = {i["IndexName"] for i in ConnectionModel.describe_table()["GlobalSecondaryIndexes"]}
    if "by_expiry" in indexes:  # DynamoDB and moto build it
        assert f"table {name}: index by_expiry added" in output
        assert "index by_expiry" not in run(), "a second run adds nothing"
    else:  # dynalite accepts the update and never builds it: said, not claimed
        assert f"table {name}: index by_expiry missing and this endpoint cannot add it" in output
    assert dynamodb.endpoint_url is None or "by_expiry" not in indexes
