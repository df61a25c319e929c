"""The stored output stream of one request, a page at a time, for its admin page.

A page holds at most :data:`PAGE_CHUNKS` chunks and about :data:`PAGE_BYTES` bytes of
encoded JSON (always at least one chunk, so a 64 KiB chunk still shows). The URL says
where it is: ``?after_seq=N`` the chunks after seq N (the default, N = 0: the first
page), ``?before_seq=N`` the chunks right before seq N. Its links lead to the first
page, the older one (right before its first chunk), the newer one (right after its last)
and the last one (ending at the request's ``output_seq``): pages next to each other
neither overlap nor leave a gap. Chunks are user data: the template escapes them; JSON
objects are shown indented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from storage.errors import StoreError, ValidationError
from storage.requests.model import RequestKey
from storage.requests.output import output_store

PAGE_CHUNKS = 200
"""Chunks per admin page at most."""

PAGE_BYTES = 256 * 1024
"""Encoded bytes per admin page at most (one chunk more than that is still shown alone)."""

UNREADABLE = "Storage is unavailable: the output cannot be read now."


def parse_seq(name: str, raw: str | None) -> int | None:
    """A seq from the query string: an integer >= 0, or None when absent;
    ValidationError otherwise."""
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise ValidationError(f"{name} must be a whole number of at least 0")
    return int(value)


@dataclass(frozen=True)
class OutputPage:
    """What the template shows of a request's output: the chunks of this page (seq and
    display text), the query strings of its links ("" when there is no such link) and
    an error note."""

    output_seq: int
    output_bytes: int
    chunks: list[dict[str, Any]] = field(default_factory=list)
    first: str = ""
    older: str = ""
    newer: str = ""
    last: str = ""
    error: str = ""


def _display(data: Any) -> dict[str, Any]:
    if isinstance(data, str):
        return {"text": data, "json": False}
    # Stored chunks came from JSON, so they always encode again.
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return {"text": text, "json": True}


def _fit(chunks: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """The leading chunks that fit one page (at least one)."""
    kept: list[tuple[int, Any]] = []
    size = 0
    for seq, data in chunks[:PAGE_CHUNKS]:
        size += len(orjson.dumps(data))
        if kept and size > PAGE_BYTES:
            break
        kept.append((seq, data))
    return kept


def _after(key: RequestKey, after_seq: int) -> list[tuple[int, Any]]:
    return _fit(output_store.read_after(key, after_seq, limit=PAGE_CHUNKS))


def _before(key: RequestKey, before_seq: int) -> list[tuple[int, Any]]:
    start = max(0, before_seq - 1 - PAGE_CHUNKS)
    if before_seq - 1 <= start:
        return []
    window = output_store.read_after(key, start, limit=before_seq - 1 - start)
    return _fit([c for c in reversed(window) if c[0] < before_seq])[::-1]


def read_page(
    key: RequestKey,
    output_seq: int,
    output_bytes: int,
    *,
    after_seq: int | None = None,
    before_seq: int | None = None,
) -> OutputPage:
    """The page after ``after_seq``, or before ``before_seq`` (both clamped to the
    stream), of a stream whose record says ``output_seq`` chunks and ``output_bytes``
    bytes were stored; an error note instead of chunks when storage cannot be read."""
    if output_seq == 0:
        return OutputPage(output_seq, output_bytes)
    try:
        if before_seq is not None:
            kept = _before(key, min(before_seq, output_seq + 1))
        else:
            kept = _after(key, min(after_seq or 0, output_seq))
    except StoreError:
        return OutputPage(output_seq, output_bytes, error=UNREADABLE)
    first_shown = kept[0][0] if kept else output_seq + 1
    last_shown = kept[-1][0] if kept else output_seq
    return OutputPage(
        output_seq,
        output_bytes,
        chunks=[{"seq": seq, **_display(data)} for seq, data in kept],
        first="?after_seq=0" if first_shown > 1 else "",
        older=f"?before_seq={first_shown}" if first_shown > 1 else "",
        newer=f"?after_seq={last_shown}" if last_shown < output_seq else "",
        last=f"?before_seq={output_seq + 1}" if last_shown < output_seq else "",
    )
