"""The most output one request may hold (8 MiB, docs/protocol.md §5), live and replayed,
to clients that read, on real server processes (uvicorn, daphne, granian): every chunk
arrives once and in order, and neither socket is taken for a slow consumer (4408),
although the handler writes, and the replay sends, eight times the 1 MiB outbox limit
faster than a client reads it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.output_stream import BIG_CHUNK, REPLAY_CHUNKS, run_request
from bench.stack import Environment, Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module", params=["uvicorn", "daphne", "granian"])
def stack(e2e: Environment, request: pytest.FixtureRequest) -> Iterator[Stack]:
    bench_actions = {"STREAMER_BENCH": "1", "STREAMER_RATE_LIMIT_FRAMES": "100000"}
    with running_stack(
        e2e, f"replay-{request.param}", server=request.param, env=bench_actions
    ) as running:
        yield running


async def test_an_8_mib_replay_reaches_a_reading_client_whole(stack: Stack) -> None:
    async with stack.client("replayer") as writer:
        await run_request(writer, "big", {"chunks": REPLAY_CHUNKS, "chunk_bytes": BIG_CHUNK})
    async with stack.client("replayer") as reader:
        status = {"request_id": "big", "after_seq": 0}
        await reader.send({"id": "st", "action": "request.status", "payload": status})
        await reader.wait_for(
            lambda f: f["type"] == "output" and f.get("seq") == REPLAY_CHUNKS, within=60.0
        )
        outputs = [f for f in reader.frames if f["type"] == "output"]
        assert reader.ws.close_code is None, "the reading client was closed"
    assert [f["seq"] for f in outputs] == list(range(1, REPLAY_CHUNKS + 1))
    assert sum(len(f["data"]) for f in outputs) > 8_000_000
