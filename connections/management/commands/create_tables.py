"""``manage.py create_tables [--delete]``: create (or delete) every DynamoDB table."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from storage import tables
from storage.base import current_config
from storage.errors import StorageUnavailable


class Command(BaseCommand):
    help = (
        "Create every DynamoDB table the service uses (on-demand billing, TTL where the "
        "endpoint supports it). Idempotent: tables that exist are left alone. The endpoint "
        "and table prefix come from DYNAMODB_ENDPOINT_URL and STREAMER_TABLE_PREFIX. "
        "With --delete, delete those tables instead (all their data is lost)."
    )
    # Touches DynamoDB only: no need to load URLs or check the ORM first.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--delete",
            action="store_true",
            help="Delete every table under the configured prefix instead of creating them.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = current_config()
        where = config.endpoint_url or f"AWS DynamoDB ({config.region})"

        def report(line: str) -> None:
            self.stdout.write(line)

        try:
            if options["delete"]:
                tables.delete_all(report)
                self.stdout.write(f"tables with prefix {config.table_prefix!r} deleted at {where}")
            else:
                names = tables.create_all(report)
                self.stdout.write(self.style.SUCCESS(f"{len(names)} table(s) ready at {where}"))
        except StorageUnavailable as exc:
            raise CommandError(
                f"DynamoDB is not reachable at {where} ({exc}). Start the local stack with "
                "./scripts/run, or set DYNAMODB_ENDPOINT_URL (empty for real AWS)."
            ) from exc
