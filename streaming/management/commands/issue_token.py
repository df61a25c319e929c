"""manage.py issue_token --tenant ID --user ID [--permissions a,b] [--ttl SECONDS]"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from streaming.auth import issue_token


class Command(BaseCommand):
    help = "Print a JWT signed with the configured development secret (STREAMER_JWT_SECRET)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant id (token claim tenant_id)")
        parser.add_argument("--user", required=True, help="user id (token claim sub)")
        parser.add_argument("--permissions", default="", help="comma-separated permissions")
        parser.add_argument(
            "--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["ttl"] <= 0:
            raise CommandError("--ttl must be positive")
        if options["ttl"] > settings.STREAMER_MAX_TOKEN_LIFETIME_S:
            raise CommandError(
                f"--ttl must be at most {settings.STREAMER_MAX_TOKEN_LIFETIME_S} "
                "(STREAMER_MAX_TOKEN_LIFETIME_S): longer tokens are refused"
            )
        permissions = [p.strip() for p in options["permissions"].split(",") if p.strip()]
        try:
            token = issue_token(options["tenant"], options["user"], permissions, options["ttl"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(token)
