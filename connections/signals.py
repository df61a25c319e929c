"""Keep the tenant cache honest when tenants change."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from connections.models import Tenant
from connections.tenants import forget_tenant


@receiver(post_save, sender=Tenant)
@receiver(post_delete, sender=Tenant)
def _tenant_changed(sender: type[Tenant], instance: Tenant, **kwargs: Any) -> None:
    forget_tenant(instance.pk)
