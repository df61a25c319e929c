"""Template filters of the live admin pages (``{% load live_admin %}``)."""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.filter
def when(value: str) -> SafeString | str:
    """A ``2025-01-31 12:00:00 UTC`` time that a narrow column may break between the
    date and the time, never inside either (a bare date breaks at its hyphens)."""
    date, _, time = value.partition(" ")
    if not time:
        return value
    return format_html(
        '<span class="live-nowrap">{}</span> <span class="live-nowrap">{}</span>', date, time
    )
