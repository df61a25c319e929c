"""The request detail page's Output section: pages of the stored output, escaped, with
links by seq, a 400 for a bad ``after_seq``, and only the request's own stream."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from connections.models import Tenant
from storage.errors import StorageUnavailable
from storage.requests.model import RequestKey, RequestRecord
from storage.requests.output import MAX_CHUNK_BYTES, encode_chunk, output_store
from streaming import admin_output
from tests.support.admin import key, messages_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("admin_state")]


def detail(k: RequestKey) -> str:
    return reverse("admin:streaming_request_detail", args=[k.as_string()])


def write(k: RequestKey, chunks: list[Any], first_seq: int = 1) -> None:
    output_store.append(k, first_seq, [encode_chunk(c) for c in chunks])


def shown_seqs(response: Any) -> list[int]:
    return [chunk["seq"] for chunk in response.context["output"].chunks]


def follow_links(staff: Client, url: str, link: str) -> list[list[int]]:
    """The seqs of every page reached by following ``link`` ("newer"/"older")."""
    pages = []
    while True:
        response = staff.get(url)
        assert response.status_code == 200
        pages.append(shown_seqs(response))
        target = getattr(response.context["output"], link)
        if not target:
            return pages
        url = response.context["output_url"] + target


@pytest.fixture
def record(tenant: Tenant, enqueue: Callable[..., RequestRecord]) -> RequestRecord:
    return enqueue("r0")


@pytest.mark.parametrize(
    ("chunks", "page_chunks", "pages"),
    [
        ([], 200, []),
        (["one line"], 200, [[1]]),
        ([f"line {i}" for i in range(1, 8)], 3, [[1, 2, 3], [4, 5, 6], [7]]),
        ([{"line": f"row {i}"} for i in range(1, 7)], 2, [[1, 2], [3, 4], [5, 6]]),
    ],
    ids=["no output", "one page", "several pages", "several pages of objects"],
)
def test_output_pages_follow_each_other_by_seq(
    staff: Client,
    record: RequestRecord,
    monkeypatch: pytest.MonkeyPatch,
    chunks: list[Any],
    page_chunks: int,
    pages: list[list[int]],
) -> None:
    monkeypatch.setattr(admin_output, "PAGE_CHUNKS", page_chunks)
    if chunks:
        write(record.key, chunks)
    response = staff.get(detail(record.key))
    body = response.content.decode()
    if not chunks:
        assert response.context["output"].chunks == [] and "No output written." in body
        return
    assert f"{len(chunks)} chunk" in body and f"output_seq {len(chunks)}" in body
    newer = follow_links(staff, detail(record.key), "newer")
    assert newer == pages
    # From the last page (the one ending at output_seq) back: contiguous full pages.
    last = staff.get(detail(record.key)).context["output"].last
    older = follow_links(staff, detail(record.key) + (last or ""), "older")
    assert [seq for page in older[::-1] for seq in page] == list(range(1, len(chunks) + 1))
    assert all(len(page) == page_chunks for page in older[:-1]) and len(older) == len(pages)


def test_a_page_holds_about_256_kib_and_at_least_one_chunk(
    staff: Client, record: RequestRecord
) -> None:
    big = "x" * (MAX_CHUNK_BYTES - 2)  # one 64 KiB chunk as JSON
    write(record.key, [big] * 9)
    pages = follow_links(staff, detail(record.key), "newer")
    assert [seq for page in pages for seq in page] == list(range(1, 10))
    assert [len(page) for page in pages] == [4, 4, 1]
    response = staff.get(detail(record.key))
    assert response.context["output"].output_bytes == 9 * MAX_CHUNK_BYTES
    assert "9 chunks stored (576.0\xa0KB; output_seq 9)" in response.content.decode()


def test_json_chunks_are_pretty_printed_and_text_is_kept_as_is(
    staff: Client, record: RequestRecord
) -> None:
    write(record.key, ["plain  text\n  indented", {"line": "found 3", "by_status": {"OK": 3}}])
    body = staff.get(detail(record.key)).content.decode()
    assert "plain  text\n  indented</pre>" in body
    assert "{\n  &quot;by_status&quot;: {\n    &quot;OK&quot;: 3\n  }," in body


@pytest.mark.parametrize(
    "chunk",
    [
        "<script>alert(1)</script>",
        {"line": "<img src=x onerror=alert(1)>"},
        '"><svg onload=alert(1)>',
    ],
)
def test_chunks_are_escaped(staff: Client, record: RequestRecord, chunk: Any) -> None:
    write(record.key, [chunk])
    body = staff.get(detail(record.key)).content.decode()
    assert "<script>alert" not in body and "<img src=x" not in body and "<svg onload" not in body
    assert "&lt;" in body


@pytest.mark.parametrize(
    ("params", "seqs"),
    [
        ({"after_seq": ""}, [1, 2, 3]),
        ({"after_seq": "0"}, [1, 2, 3]),
        ({"after_seq": "2"}, [3]),
        ({"after_seq": "3"}, []),
        ({"after_seq": "99"}, []),  # clamped to the last chunk: nothing newer
        ({"before_seq": "3"}, [1, 2]),
        ({"before_seq": "99"}, [1, 2, 3]),  # clamped: the last page
        ({"before_seq": "1"}, []),
        ({"before_seq": "0"}, []),
    ],
)
def test_after_and_before_seq(
    staff: Client, record: RequestRecord, params: dict[str, str], seqs: list[int]
) -> None:
    write(record.key, ["a", "b", "c"])
    response = staff.get(detail(record.key), params)
    assert response.status_code == 200
    assert shown_seqs(response) == seqs
    if not seqs:
        assert "No chunk on this page." in response.content.decode()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"after_seq": "-1"}, "after_seq must be a whole number of at least 0"),
        ({"after_seq": "abc"}, "after_seq must be a whole number of at least 0"),
        ({"after_seq": "1.5"}, "after_seq must be a whole number of at least 0"),
        ({"after_seq": "\u0663"}, "after_seq must be a whole number of at least 0"),
        ({"after_seq": "9" * 40}, "after_seq must be a whole number of at least 0"),
        ({"before_seq": "x"}, "before_seq must be a whole number of at least 0"),
        ({"after_seq": "1", "before_seq": "2"}, "give after_seq or before_seq, not both"),
    ],
)
def test_a_bad_seq_is_a_400_that_still_shows_the_request(
    staff: Client, record: RequestRecord, params: dict[str, str], message: str
) -> None:
    write(record.key, ["secret line"])
    response = staff.get(detail(record.key), params)
    assert response.status_code == 400
    body = response.content.decode()
    assert f"Invalid output page: {message}." in body
    assert "report.run" in body and "secret line" not in body


def test_only_the_requests_own_stream_is_shown(
    staff: Client, tenant: Tenant, enqueue: Callable[..., RequestRecord]
) -> None:
    mine = enqueue("r0")
    theirs = enqueue("r0", tenant_id="globex")
    write(mine.key, ["acme's line"])
    write(theirs.key, ["globex secret", "more"])
    body = staff.get(detail(mine.key)).content.decode()
    assert "acme&#x27;s line" in body and "globex secret" not in body
    # Another tenant's request under this tenant's key does not exist here.
    other = key("g1", tenant_id="acme")
    enqueue("g1", tenant_id="globex")
    write(key("g1", tenant_id="globex"), ["globex only"])
    response = staff.get(detail(other), {"after_seq": "0"}, follow=True)
    assert response.redirect_chain[0][0] == "/admin/live/requests/?tenant=acme"
    assert any("does not exist" in m for m in messages_of(response))
    assert "globex only" not in response.content.decode()


def test_staff_without_the_view_permission_see_no_output(
    bare_staff: Client, record: RequestRecord
) -> None:
    write(record.key, ["private"])
    response = bare_staff.get(detail(record.key))
    assert response.status_code == 403 and "private" not in response.content.decode()


def test_output_when_storage_is_down(
    staff: Client, record: RequestRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(record.key, ["a"])

    def down(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("x")

    monkeypatch.setattr(output_store, "read_after", down)
    response = staff.get(detail(record.key))
    body = response.content.decode()
    assert response.status_code == 200 and "report.run" in body
    assert "the output cannot be read now" in body
    assert not re.search(r"No chunk on this page", body)
