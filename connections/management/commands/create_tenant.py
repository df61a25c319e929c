"""manage.py create_tenant ID [--name] [--max-connections N] [--disable | --enable]
[--webhook-url URL] [--webhook-secret SECRET]

``--disable`` also closes the tenant's live connections with 4403, as the admin's
disable does (``close_tenant_connections``). Without a shared channel layer
(``REDIS_URL`` unset) the servers' sockets are out of this process's reach: when the
tenant has such connections the command changes nothing, says so and exits 1.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug

from connections.admin_support import close_tenant_connections
from connections.layers import SHARED_LAYER_HINT
from connections.models import Tenant
from connections.publishing import Audience, OutOfReach, audience_connections, out_of_reach
from storage.errors import StoreError


class Command(BaseCommand):
    help = "Create a tenant, or update it if it exists (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant_id", help="slug: letters, digits, - and _")
        parser.add_argument("--name", help="display name")
        parser.add_argument("--max-connections", type=int, help="0 = unlimited")
        parser.add_argument(
            "--webhook-url",
            help="https endpoint for webhooks (http only to loopback with DJANGO_DEBUG on); "
            '"" removes it',
        )
        parser.add_argument(
            "--webhook-secret",
            help="whsec_… secret that signs them; with a URL and no secret one is generated "
            "and printed",
        )
        state = parser.add_mutually_exclusive_group()
        state.add_argument(
            "--disable",
            action="store_true",
            help="refuse its connections and close the live ones (4403)",
        )
        state.add_argument("--enable", action="store_true", help="accept its connections again")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant_id = options["tenant_id"]
        try:
            validate_slug(tenant_id)
        except ValidationError as exc:
            raise CommandError(
                f"invalid tenant id {tenant_id!r}: use letters, digits, - and _"
            ) from exc
        if options["max_connections"] is not None and options["max_connections"] < 0:
            raise CommandError("--max-connections must be 0 or more")
        if options["disable"]:
            self._refuse_out_of_reach(tenant_id)
        tenant, created = Tenant.objects.get_or_create(pk=tenant_id, defaults={"name": tenant_id})
        if options["name"]:
            tenant.name = options["name"]
        if options["max_connections"] is not None:
            tenant.max_connections = options["max_connections"]
        if options["disable"]:
            tenant.active = False
        if options["enable"]:
            tenant.active = True
        generated = self._set_webhook(tenant, options["webhook_url"], options["webhook_secret"])
        tenant.save()
        state = "active" if tenant.active else "disabled"
        verb = "created" if created else "updated"
        self.stdout.write(
            f"tenant {tenant.id} {verb}: name={tenant.name!r} {state} "
            f"max_connections={tenant.max_connections or 'unlimited'}"
            + (f" webhook_url={tenant.webhook_url}" if tenant.webhook_url else "")
        )
        if generated:
            self.stdout.write(f"webhook secret (store it with the receiver):\n{generated}")
        if options["disable"]:
            self._close_connections(tenant.id)

    @staticmethod
    def _refuse_out_of_reach(tenant_id: str) -> None:
        """Change nothing when live sockets of the tenant could not be closed from here.
        A storage failure is left to the close below, which reports it."""
        try:
            infos = asyncio.run(audience_connections(Audience(tenant_id)))
        except StoreError:
            return
        if unreachable := out_of_reach(infos):
            raise CommandError(
                f"tenant {tenant_id} not changed: {OutOfReach(len(unreachable))}, so they "
                f"could not be closed. {SHARED_LAYER_HINT}"
            )

    def _close_connections(self, tenant_id: str) -> None:
        """Close the tenant's live sockets with 4403, as the admin's disable does."""
        report = asyncio.run(close_tenant_connections(tenant_id))
        if report.error:
            self.stderr.write(
                f"tenant {tenant_id} disabled, but its connections could not be listed "
                "(storage unavailable): they are refused at their next connect only"
            )
            return
        text = f"closed {report.closed} live connection(s) with 4403"
        if report.failed:
            self.stderr.write(f"{text}; {report.failed} could not be reached")
        else:
            self.stdout.write(text)

    @staticmethod
    def _set_webhook(tenant: Tenant, url: str | None, secret: str | None) -> str:
        """Apply --webhook-url/--webhook-secret (validated like the admin form); returns
        a secret generated for a new endpoint, else ""."""
        if url is not None:
            tenant.webhook_url = url
            if not url:
                tenant.webhook_secret = ""
        if secret is not None:
            tenant.webhook_secret = secret
        before = tenant.webhook_secret
        try:
            tenant.clean()
            tenant.clean_fields(
                exclude=[f.name for f in Tenant._meta.fields if "webhook" not in f.name]
            )
        except ValidationError as exc:
            errors = "; ".join(m for msgs in exc.message_dict.values() for m in msgs)
            raise CommandError(errors) from exc
        return tenant.webhook_secret if tenant.webhook_secret != before else ""
