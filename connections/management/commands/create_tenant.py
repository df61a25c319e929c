"""manage.py create_tenant ID [--name] [--max-connections N] [--disable]"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug

from connections.models import Tenant


class Command(BaseCommand):
    help = "Create a tenant, or update it if it exists (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant_id", help="slug: letters, digits, - and _")
        parser.add_argument("--name", help="display name")
        parser.add_argument("--max-connections", type=int, help="0 = unlimited")
        state = parser.add_mutually_exclusive_group()
        state.add_argument("--disable", action="store_true", help="refuse its connections (4403)")
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
        tenant, created = Tenant.objects.get_or_create(pk=tenant_id, defaults={"name": tenant_id})
        if options["name"]:
            tenant.name = options["name"]
        if options["max_connections"] is not None:
            tenant.max_connections = options["max_connections"]
        if options["disable"]:
            tenant.active = False
        if options["enable"]:
            tenant.active = True
        tenant.save()
        state = "active" if tenant.active else "disabled"
        verb = "created" if created else "updated"
        self.stdout.write(
            f"tenant {tenant.id} {verb}: name={tenant.name!r} {state} "
            f"max_connections={tenant.max_connections or 'unlimited'}"
        )
