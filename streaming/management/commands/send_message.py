"""manage.py send_message (--connection ID | --user TENANT:USER | --tenant ID) --json FRAME

Prints ``delivered=N gone=N failed=N`` and exits 0 when at least one socket got the
frame, else 1. Without a shared channel layer (``REDIS_URL`` unset) the sockets of the
servers are out of this process's reach: it then sends nothing, says so and exits 1.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.layers import SHARED_LAYER_HINT
from connections.publishing import Audience, OutOfReach, PublishError, build_frame, publish
from protocol import codec
from storage.connection import connection_store
from storage.errors import NotFound, StoreError


class Command(BaseCommand):
    help = "Push a frame to one connection, every connection of a user, or a whole tenant."

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--connection", metavar="ID")
        target.add_argument("--user", metavar="TENANT:USER")
        target.add_argument("--tenant", metavar="ID")
        parser.add_argument(
            "--json", required=True, metavar="FRAME", help='e.g. \'{"text": "hi"}\''
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            frame = build_frame(codec.loads(options["json"]))
        except ValueError as exc:
            raise CommandError(
                f"invalid frame: {exc if isinstance(exc, PublishError) else 'not JSON'}"
            ) from exc
        try:
            audience = self._audience(options)
            report = asyncio.run(publish(audience, frame, refuse_out_of_reach=True))
        except StoreError as exc:
            raise CommandError(f"storage error: {exc}") from exc
        except OutOfReach as exc:
            raise CommandError(f"nothing was sent: {exc}. {SHARED_LAYER_HINT}") from exc
        self.stdout.write(
            f"delivered={report.delivered} gone={len(report.gone)} failed={len(report.failed)}"
            + (" relayed to the servers" if report.relayed else "")
        )
        if report.delivered == 0 and not report.relayed:
            raise CommandError("no connection received the frame")

    @staticmethod
    def _audience(options: dict[str, Any]) -> Audience:
        if options["connection"]:
            try:
                info = connection_store.get(options["connection"])
            except NotFound as exc:
                raise CommandError("no such connection") from exc
            return Audience(info.tenant_id, connection_id=info.connection_id)
        if options["user"]:
            tenant, sep, user = options["user"].partition(":")
            if not sep or not tenant or not user:
                raise CommandError("--user takes TENANT:USER")
            return Audience(tenant, user_id=user)
        return Audience(options["tenant"])
