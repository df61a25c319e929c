"""manage.py create_api_key TENANT [--name NAME]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.models import ApiKey, Tenant


class Command(BaseCommand):
    help = (
        "Create an API key for a tenant (the publish and jobs APIs, /api/v1/). The key is "
        "printed once, alone on the last line; only its hash is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant_id", help="an existing tenant (create_tenant)")
        parser.add_argument("--name", default="", help="what the key is for (shown in the admin)")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(pk=options["tenant_id"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {options['tenant_id']!r}: create it with create_tenant")
        if len(options["name"]) > 100:
            raise CommandError("--name must be at most 100 characters")
        row, secret = ApiKey.issue(tenant, options["name"])
        state = "" if tenant.active else " (the tenant is disabled: the key works once enabled)"
        self.stdout.write(f"API key {row} created for tenant {tenant.id}{state}. Keep it now:")
        self.stdout.write(secret)
