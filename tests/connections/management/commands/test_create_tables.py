"""``manage.py create_tables``: idempotent creation, --delete, and a clear error when
DynamoDB cannot be reached."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError

from storage import base, localserver


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
