from django.apps import AppConfig


class StreamingConfig(AppConfig):
    name = "streaming"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from storage import (
            base,
            heartbeat,  # noqa: F401  (registers the workers table)
        )
        from storage.requests import model  # noqa: F401  (registers the requests table)
        from streaming import (
            jwt_config,  # noqa: F401  (registers its system check)
            tasks_backend,  # noqa: F401  (registers the streamer.task action)
        )
        from streaming.actions import (  # noqa: F401  (register built-in actions)
            auth,
            builtin,
            report,
            watch,
        )

        base.configure(base.current_config())
        from django.conf import settings

        from storage.requests.store import request_store

        request_store.record_ttl_s = settings.STREAMER_REQUEST_TTL_S

        if settings.STREAMER_BENCH_ENDPOINTS:
            from streaming import benchmarks

            benchmarks.register()
