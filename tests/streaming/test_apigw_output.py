"""Output streams over the API Gateway transport, against moto (DynamoDB and the
Management API): live frames posted in order, and a second connection resuming with
``after_seq``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from streaming.actions.registry import action, registry
from streaming.apigw import handle_websocket_event, sessions
from streaming.worker import Worker
from tests.connections.transports.test_apigw import posted_frames
from tests.streaming.test_apigw import connect_event, message_event
from tests.support.apigw import token

GATE: dict[str, asyncio.Event] = {}


@pytest.fixture
def streaming_action():
    @action("apigw.stream", mode="async")
    async def stream(job: Any, payload: dict[str, Any]) -> int:
        for i in range(1, 501):
            job.write(f"line {i}")
            if i == 200:
                await GATE["gate"].wait()
        return 500

    GATE["gate"] = asyncio.Event()
    sessions._items.clear()
    yield
    registry.unregister("apigw.stream")
    sessions._items.clear()


async def until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} never happened")


def outputs(connection_id: str) -> list[int]:
    return [f["seq"] for f in posted_frames(connection_id) if f["type"] == "output"]


def types(connection_id: str) -> list[str]:
    return [f["type"] for f in posted_frames(connection_id)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("after_seq", [0, 150, 200])
async def test_live_output_and_resume_over_apigw(
    moto_dynamodb, apigw_tenant, streaming_action, after_seq: int
) -> None:
    await handle_websocket_event(connect_event(token(), connection_id="Cid1="))
    await handle_websocket_event(connect_event(token(), connection_id="Cid2="))
    stop = asyncio.Event()
    run = asyncio.create_task(Worker(poll_interval_s=0.05).run(stop))
    try:
        body = json.dumps({"id": "s1", "action": "apigw.stream"})
        await handle_websocket_event(message_event(body, connection_id="Cid1="))
        await until(lambda: outputs("Cid1=")[-1:] == [200], "chunk 200 reached the sender")

        status = {"request_id": "s1", "after_seq": after_seq}
        body = json.dumps({"id": "st", "action": "request.status", "payload": status})
        await handle_websocket_event(message_event(body, connection_id="Cid2="))
        await until(lambda: len(outputs("Cid2=")) == 200 - after_seq, "the replay")
        GATE["gate"].set()
        await until(lambda: "complete" in types("Cid2="), "the end on the resumed socket")
    finally:
        GATE["gate"].set()
        stop.set()
        await run

    assert outputs("Cid1=") == list(range(1, 501))
    assert types("Cid1=")[0] == "acknowledgment" and types("Cid1=")[-1] == "complete"
    resumed = posted_frames("Cid2=")
    assert resumed[0]["type"] == "response" and resumed[0]["data"]["output_seq"] == 200
    assert outputs("Cid2=") == list(range(after_seq + 1, 501))
    assert types("Cid2=")[-1] == "complete" and types("Cid2=").count("complete") == 1
    assert all(f["data"] == f"line {f['seq']}" for f in resumed if f["type"] == "output")
