"""The starvation scenario of issue 11 with real processes: one tenant queues more long
reports than the workers have slots, and another tenant's quick report still completes
while the first tenant's are running and queued (docs/protocol.md §5 1.1, fairness).

Redis mode with separate ``process_requests`` workers of 2 slots each (a tenant's
default share is then 1 slot per worker), against the embedded DynamoDB server.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.stack import Environment, running_stack

pytestmark = pytest.mark.e2e

BACKLOG = 6
LONG = {"duration_s": 600, "steps": 10}
ENV = {"STREAMER_WORKER_CONCURRENCY": "2", "STREAMER_POLL_INTERVAL_S": "0.5"}


@pytest.mark.parametrize("workers", [1, 2])
async def test_another_tenants_report_completes_behind_a_backlog(
    e2e: Environment, workers: int, measurements: dict[str, str]
) -> None:
    with running_stack(
        e2e, f"fair{workers}", redis=True, server_worker=False, workers=workers, env=ENV
    ) as stack:
        async with stack.client("hog", "demo") as hog, stack.client("probe", "other") as other:
            ids = [f"long-{i}" for i in range(BACKLOG)]
            for request_id in ids:
                ack = await hog.submit(request_id, LONG)
                assert ack["type"] == "acknowledgment", ack

            async def hog_statuses() -> list[str]:
                records = await stack.read_records(ids, "hog", "demo")
                return [str(r.status) for r in records]

            # Every worker takes the hog's share of its slots (one each).
            for _ in range(600):
                if (await hog_statuses()).count("PROCESSING") >= workers:
                    break
                await asyncio.sleep(0.1)

            sent = time.monotonic()
            ack = await other.submit("quick-1", {"duration_s": 0, "steps": 1})
            assert ack["type"] == "acknowledgment", ack
            done = await other.terminal("quick-1", within=60)
            measurements[f"fairness: other tenant's report behind a backlog ({workers} worker)"] = (
                f"{time.monotonic() - sent:.2f} s"
            )
            assert done["type"] == "complete", done

            # It ran while the hog's reports were still running and queued.
            statuses = await hog_statuses()
            assert statuses.count("PROCESSING") == workers, statuses
            assert statuses.count("PENDING") == BACKLOG - workers, statuses

            for request_id in ids:
                answer = await hog.call("request.cancel", {"request_id": request_id})
                assert answer["type"] == "response", answer
            assert set(await hog_statuses()) == {"CANCELLED"}
