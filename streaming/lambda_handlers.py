"""AWS Lambda entry points.

* ``streaming.lambda_handlers.websocket`` — the WebSocket API routes ``$connect``,
  ``$disconnect`` and ``$default``.
* ``streaming.lambda_handlers.stream`` — DynamoDB Streams on the requests table: the
  worker.

Each needs, besides the usual settings: ``DATABASE_URL`` (tenants),
``STREAMER_TABLE_PREFIX`` and ``DYNAMODB_ENDPOINT_URL=""`` (real DynamoDB); the WebSocket
function also ``STREAMER_JWT_SECRET`` or ``STREAMER_JWT_PUBLIC_KEY``. The worker and
sweep functions verify no token, so they need no JWT key (least privilege): the Lambda
runtime's ``_HANDLER`` variable says which function this is. Secrets may be given as
``<NAME>_SECRET_ARN`` (:mod:`streaming.secret_env`). A missing setting fails the cold
start with a clear message, not the first event.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streaming.settings")


TOKENLESS_HANDLERS = ("streaming.lambda_handlers.stream", "streaming.lambda_handlers.sweep")


def check_settings(handler: str | None = None) -> None:
    """Fail fast (at import) when a setting the handler (``_HANDLER`` by default; unset:
    every handler) needs is missing."""
    handler = os.environ.get("_HANDLER", "") if handler is None else handler
    problems = []
    if handler not in TOKENLESS_HANDLERS:
        if not (settings.STREAMER_JWT_SECRET or settings.STREAMER_JWT_PUBLIC_KEY):
            problems.append("set STREAMER_JWT_SECRET or STREAMER_JWT_PUBLIC_KEY")
        if not settings.STREAMER_JWT_ALGORITHMS:
            problems.append("set STREAMER_JWT_ALGORITHMS")
    if not settings.STREAMER_TABLE_PREFIX:
        problems.append("set STREAMER_TABLE_PREFIX")
    if problems:
        raise ImproperlyConfigured("Streamer Lambda handlers: " + "; ".join(problems))


django.setup()
check_settings()

from streaming.apigw import handle_stream_event, handle_websocket_event  # noqa: E402


def websocket(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda handler for the WebSocket API routes."""
    return asyncio.run(handle_websocket_event(event))


def stream(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda handler for DynamoDB Streams on the requests table."""
    return asyncio.run(handle_stream_event(event))


def sweep(event: dict[str, Any] | None = None, context: Any = None) -> dict[str, Any]:
    """Scheduled (e.g. every minute): run retries whose time has come and requests whose
    worker died (expired lease) — what the polling loop of ``process_requests`` does —
    and close the sockets whose token expired (API Gateway has no timer of ours)."""
    return asyncio.run(_sweep())


async def _sweep() -> dict[str, Any]:
    from connections.expiry import close_expired
    from streaming.worker import Worker

    expired = await close_expired(settings.STREAMER_JWT_LEEWAY_S * 1000)
    worker = Worker.from_settings()
    started = await worker.poll_once()
    await asyncio.gather(*(task for task, _ in list(worker.jobs.values())), return_exceptions=True)
    return {"claimed": started, "expired": expired}
