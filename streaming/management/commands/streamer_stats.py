"""manage.py streamer_stats [--json]"""

from __future__ import annotations

from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.admin_support import format_duration
from streaming.stats import Stats, collect_stats


class Command(BaseCommand):
    help = (
        "Show tenants and their live connections, active requests by status, the oldest "
        "waiting request and the workers' heartbeats (the admin dashboard's figures, "
        "read fresh). Exits non-zero when part of it could not be read."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        stats = collect_stats(use_cache=False)
        if options["json"]:
            self.stdout.write(orjson.dumps(stats.as_dict(), option=orjson.OPT_INDENT_2).decode())
        else:
            self._text(stats)
        if stats.errors:
            raise CommandError("incomplete: " + "; ".join(stats.errors))

    def _text(self, stats: Stats) -> None:
        out = self.stdout.write
        out(f"Tenants: {stats.tenants_total} ({stats.tenants_active} active)")
        out("Connections per tenant:")
        width = max([len(t.tenant_id) for t in stats.tenants] + [6])
        for t in stats.tenants:
            count = "?" if t.connections is None else str(t.connections)
            limit = str(t.max_connections) if t.max_connections else "unlimited"
            state = "" if t.active else "  (disabled)"
            out(f"  {t.tenant_id:<{width}}  {count:>7} / {limit}{state}")
        if not stats.tenants:
            out("  (no tenants)")
        if not stats.tenants_all_counted:
            out(f"  … only the first {len(stats.tenants)} tenants are counted")
        out(f"  total: {stats.connections_total}")
        plus = "+" if stats.requests_capped else ""
        by_status = ", ".join(f"{s} {n}{plus}" for s, n in stats.requests_by_status.items())
        out(f"Active requests: {by_status or 'unavailable'}")
        oldest = stats.oldest_waiting
        if not stats.requests_by_status:
            out("Oldest pending request: unavailable")
        elif oldest is None:
            out("Oldest pending request: none waiting")
        else:
            waited = format_duration(oldest.waiting_ms)
            out(
                f"Oldest pending request: {oldest.tenant_id}/{oldest.user_id}/"
                f"{oldest.request_id} ({oldest.status}) waiting {waited}"
            )
        alive, stale = stats.workers_alive(), stats.workers_stale()
        if stats.workers_available:
            out(f"Workers: {len(alive)} alive, {len(stale)} stale")
        else:
            out("Workers: unavailable")
        for w in stats.workers:
            state = "alive" if w.is_alive(stats.generated_at) else "STALE"
            age = format_duration(w.age_ms(stats.generated_at))
            up = format_duration(w.last_beat - w.started_at)
            out(f"  {w.worker_id}  {state}  last beat {age} ago  jobs {w.jobs}  up {up}")
        for error in stats.errors:
            self.stderr.write(f"error: {error}")
