"""A result the broker refuses is published again while the task is held, not run again.

The broker nacks a publish it cannot take: a quorum queue between leaders after a node went
away (the cluster clean-stop row saw ~11 s of nacks), or a full queue with
`x-overflow=reject-publish`. The latter is what this test uses, on a real RabbitMQ: a queue
bound to the results exchange that holds nothing (`x-max-length=0`), so every result publish
is nacked until the test deletes it. Before, the worker requeued the task after each nack
and ran it again (on a quorum queue each run spent one of its deliveries, and succeeded tasks
were dead-lettered for `delivery_limit`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.transport import connect
from tests.runtime_support import InProcessWorkers, Numbers, depth, drain, make_names

pytestmark = pytest.mark.timeout(60)
REFUSED = "the broker refused a next hop"


async def wait_logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in record.getMessage() for record in caplog.records):
        assert time.monotonic() < deadline, f"never logged {text!r}"
        await asyncio.sleep(0.05)


async def test_a_refused_result_is_published_again_and_the_task_runs_once(
    amqp_url: str, workers: InProcessWorkers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spectask.runtime.consumer")
    names = make_names()
    runs: list[str] = []

    async def total(payload: Numbers, context: TaskContext) -> dict[str, Any]:
        runs.append(context.task_id)
        return {"sum": sum(payload.values)}

    jam = f"{names.result_queue}.jam"
    connection = await connect(amqp_url, robust=False)
    async with connection, await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        await broker.declare(names.topology)
        channel = await connection.channel()
        full = {"x-max-length": 0, "x-overflow": "reject-publish"}
        queue = await channel.declare_queue(jam, arguments=full, auto_delete=True)
        await queue.bind(names.results, "#")
        task_id = await TaskPublisher(await broker.publisher(), names.topology).submit(
            names.send, Numbers(values=[1, 2])
        )
        await workers.start(broker, names, total)
        await wait_logged(caplog, REFUSED)
        assert runs == [task_id]  # held, not requeued: the handler ran once
        await queue.delete(if_unused=False, if_empty=False)
        [result] = await drain(amqp_url, names.result_queue, 1, timeout=20)
        [stats] = await workers.stop_all()
    assert json.loads(result.body)["task_id"] == task_id
    assert runs == [task_id]
    assert (stats.succeeded, stats.requeued) == (1, 0)
    assert await depth(amqp_url, names.queue) == 0  # acked once its result was confirmed
    assert any("the broker took its next hops after" in r.getMessage() for r in caplog.records)
