"""Admin registration of tenants."""

from django.contrib import admin

from connections.models import Tenant


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "active", "max_connections", "created_at")
    list_filter = ("active",)
    search_fields = ("id", "name")
