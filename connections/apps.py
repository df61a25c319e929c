from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    name = "connections"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from connections import signals  # noqa: F401

        # Import the models so they register before configure().
        from storage import base, connection, subscription, webhooks  # noqa: F401

        base.configure(
            base.StoreConfig(
                endpoint_url=settings.DYNAMODB_ENDPOINT_URL,
                region=settings.DYNAMODB_REGION,
                table_prefix=settings.STREAMER_TABLE_PREFIX,
            )
        )
