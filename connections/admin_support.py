"""What the DynamoDB-backed admin pages share: permissions, the admin log, time
formatting, cached live connection counts, and the async operations behind the
connection actions (disconnect, test frame, closing a tenant's sockets).

Used by ``connections/admin.py`` and ``connections/admin_views.py`` here and by the
request pages and the dashboard in ``streaming``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from connections.manager import manager
from connections.models import Tenant
from connections.publishing import build_frame
from connections.storage_pool import run_storage
from storage.connection import ConnectionInfo, connection_store
from storage.errors import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Rows per page of the live lists.
PAGE_SIZE = 50
#: Live connection counts are cached this long (seconds).
COUNT_CACHE_S = 10
#: At most this many tenants get a live count on one page (dashboard, tenant list).
MAX_COUNTED_TENANTS = 100
#: Longest text of a test frame.
MAX_TEST_TEXT = 1000
#: Close code of a connection whose tenant was disabled (docs/protocol.md §1).
TENANT_DISABLED_CODE = 4403
#: Close code of an admin's disconnect: a normal closure, with a reason.
ADMIN_DISCONNECT_CODE = 1000
ADMIN_DISCONNECT_REASON = "Disconnected by an administrator"

_COUNT_KEY = "streamer:admin:connections:{}"
_CLOSE_CONCURRENCY = 64

#: Acting on live connections and requests (every action) needs tenant change.
CHANGE_PERM = "connections.change_tenant"
#: Seeing them needs tenant view, or change.
VIEW_PERMS = ("connections.view_tenant", CHANGE_PERM)


# --- permissions and the admin log ------------------------------------------------------


def can_view(request: HttpRequest) -> bool:
    """Live connections and requests belong to tenants: seeing them needs the tenant
    view (or change) permission."""
    return any(request.user.has_perm(perm) for perm in VIEW_PERMS)


def require_view(request: HttpRequest) -> None:
    """PermissionDenied (403) unless the user may view tenants."""
    if not can_view(request):
        raise PermissionDenied


def can_change(request: HttpRequest) -> bool:
    """Whether the user may act on live connections and requests (tenant change)."""
    return request.user.has_perm(CHANGE_PERM)


def require_change(request: HttpRequest) -> None:
    """PermissionDenied (403) unless the user may change tenants (every live action)."""
    if not can_change(request):
        raise PermissionDenied


def log_admin_action(
    request: HttpRequest, *, object_id: str, object_repr: str, message: str
) -> LogEntry:
    """One row in Django's admin log for an object that is not in the ORM (who, what,
    when): no content type, ``object_id`` = the connection id or request key."""
    user_id = request.user.pk
    if user_id is None:  # admin_view lets only logged-in staff through
        raise PermissionDenied
    return LogEntry.objects.create(
        user_id=user_id,
        content_type=None,
        object_id=object_id,
        object_repr=object_repr[:200],
        action_flag=CHANGE,
        change_message=message,
    )


def run(awaitable: Awaitable[T]) -> T:
    """Run a coroutine from a sync admin view."""

    async def _await() -> T:
        return await awaitable

    return async_to_sync(_await)()


# --- formatting ---------------------------------------------------------------------------


def format_ms(ms: int | None) -> str:
    """An epoch-ms time as ``2025-01-31 12:00:00 UTC`` (empty when unset)."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(ms: int | None) -> str:
    """A duration in ms, readable: ``850 ms``, ``12.5 s``, ``3 min 4 s``, ``2 h 5 min``,
    ``3 d 4 h`` (empty when unset)."""
    if ms is None:
        return ""
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def format_age(ms: int | None, now: int) -> str:
    """How long ago ``ms`` was: ``12.5 s ago`` (``in 3 s`` for a future time)."""
    if ms is None:
        return ""
    if ms > now:
        return f"in {format_duration(ms - now)}"
    return f"{format_duration(now - ms)} ago"


def query_string(**params: Any) -> str:
    """``?a=1&b=2`` of the non-empty parameters ("" when none)."""
    kept = {key: value for key, value in params.items() if value not in (None, "")}
    return f"?{urlencode(kept)}" if kept else ""


def tenant_choices(selected: str = "", limit: int = 500) -> list[tuple[str, str]]:
    """(id, label) of the tenants for a filter select; the selected one is always in."""
    rows = [
        (tenant.id, f"{tenant.id} — {tenant.name}" if tenant.name else tenant.id)
        for tenant in Tenant.objects.order_by("id")[:limit]
    ]
    if selected and all(tenant_id != selected for tenant_id, _ in rows):
        rows.insert(0, (selected, selected))
    return rows


# --- live connection counts -------------------------------------------------------------


def connection_counts(
    tenant_ids: Iterable[str], *, use_cache: bool = True
) -> dict[str, int | None]:
    """Live connections of each tenant (``count_by_tenant``: one index query each, run a
    few at a time), cached for :data:`COUNT_CACHE_S` seconds. At most
    :data:`MAX_COUNTED_TENANTS` are counted; the others, and any whose count failed,
    map to None.
    """
    ids = list(dict.fromkeys(tenant_ids))
    counted = ids[:MAX_COUNTED_TENANTS]
    result: dict[str, int | None] = dict.fromkeys(ids)
    if use_cache:
        cached = cache.get_many([_COUNT_KEY.format(t) for t in counted])
        for tenant_id in counted:
            value = cached.get(_COUNT_KEY.format(tenant_id))
            if value is not None:
                result[tenant_id] = value
    missing = [t for t in counted if result[t] is None]
    if missing:
        with ThreadPoolExecutor(max_workers=min(8, len(missing))) as pool:
            fresh = dict(zip(missing, pool.map(_count_one, missing), strict=True))
        result.update(fresh)
        cache.set_many(
            {_COUNT_KEY.format(t): n for t, n in fresh.items() if n is not None},
            timeout=COUNT_CACHE_S,
        )
    return result


def _count_one(tenant_id: str) -> int | None:
    try:
        return connection_store.count_by_tenant(tenant_id)
    except StoreError:
        log.warning("could not count the connections of tenant %s", tenant_id)
        return None


def forget_count(tenant_id: str) -> None:
    """Drop a cached count (after an action changed it)."""
    cache.delete(_COUNT_KEY.format(tenant_id))


# --- operations behind the actions ------------------------------------------------------


@dataclass(frozen=True)
class CloseReport:
    """What closing a tenant's connections did."""

    closed: int = 0
    failed: int = 0
    error: str | None = None


async def close_tenant_connections(
    tenant_id: str, code: int = TENANT_DISABLED_CODE, reason: str = "Tenant disabled"
) -> CloseReport:
    """Close every live connection of a tenant with ``code`` (``manager.disconnect``,
    at most 64 at a time). A storage failure while listing them is reported, not raised.
    """
    try:
        infos = await run_storage(lambda: list(connection_store.iter_by_tenant(tenant_id)))
    except StoreError as exc:
        return CloseReport(error=str(exc))
    semaphore = asyncio.Semaphore(_CLOSE_CONCURRENCY)

    async def one(info: ConnectionInfo) -> bool:
        async with semaphore:  # the listed record is enough: no read per connection
            return await manager.disconnect(info.connection_id, code, reason, record=info)

    outcomes = await asyncio.gather(*(one(info) for info in infos), return_exceptions=True)
    closed = sum(1 for outcome in outcomes if outcome is True)
    forget_count(tenant_id)
    return CloseReport(closed=closed, failed=len(infos) - closed)


async def disconnect_connection(connection_id: str) -> bool:
    """Close one connection's socket wherever it is (False: not registered, or the
    transport failed)."""
    return await manager.disconnect(connection_id, ADMIN_DISCONNECT_CODE, ADMIN_DISCONNECT_REASON)


def message_frame(text: str) -> dict[str, Any]:
    """The frame an admin's "send a test frame" pushes: ``{"type": "message", "text"}``."""
    return build_frame({"type": "message", "text": text})


async def send_test_frame(connection_id: str, text: str) -> bool:
    """Push a test frame to one connection (False: not registered or not delivered)."""
    return await manager.send(connection_id, message_frame(text))
