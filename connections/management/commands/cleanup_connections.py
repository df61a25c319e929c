"""manage.py cleanup_connections [--older-than SECONDS] [--dry-run]"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.expiry import close_expired
from storage.connection import STALE_SHARDS, connection_store
from storage.errors import StoreError

#: Default age: one day, like the connection items' DynamoDB TTL (nothing calls
#: ``touch`` on live traffic yet, so a shorter default could remove live sockets).
DEFAULT_OLDER_THAN_S = 24 * 3600


class Command(BaseCommand):
    help = (
        "Delete connection records not seen for more than --older-than seconds (sockets "
        "that died without a disconnect: a server killed, a lost API Gateway event). "
        f"Queries the {STALE_SHARDS} shards of the by_last_seen index (never a table scan) "
        "and deletes in batches of 25, printing the running count. Also closes the "
        "connections whose token expired (by_expiry index), e.g. API Gateway sockets."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=DEFAULT_OLDER_THAN_S,
            metavar="SECONDS",
            help=f"age of the last activity (default {DEFAULT_OLDER_THAN_S}: one day)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = options["older_than"]
        dry_run = options["dry_run"]
        if older_than <= 0:
            raise CommandError("--older-than must be a positive number of seconds")
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(
            f"{'Counting' if dry_run else 'Deleting'} connections last seen more than "
            f"{older_than} s ago…"
        )

        def progress(total: int) -> None:
            self.stdout.write(f"  … {verb} {total} so far")
            self.stdout.flush()

        try:
            total = connection_store.delete_stale(
                older_than * 1000, dry_run=dry_run, on_progress=progress
            )
        except StoreError as exc:
            raise CommandError(f"storage error: {exc}") from exc
        noun = "connection" if total == 1 else "connections"
        if not dry_run:
            try:
                expired = async_to_sync(close_expired)(settings.STREAMER_JWT_LEEWAY_S * 1000)
            except StoreError as exc:
                raise CommandError(f"storage error: {exc}") from exc
            self.stdout.write(f"Closed {expired} connection(s) whose token expired.")
        if dry_run:
            self.stdout.write(f"Dry run: {total} stale {noun} would be deleted.")
        else:
            self.stdout.write(self.style.SUCCESS(f"Deleted {total} stale {noun}."))
