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
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.transport import Queue, connect
from spectask.runtime.worker import Handler
from tests.runtime_support import InProcessWorkers, Names, Numbers, depth, drain, make_names

pytestmark = pytest.mark.timeout(60)
REFUSED = "the broker refused a next hop"
RENEWED = "publishing on a new channel"


async def wait_logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in record.getMessage() for record in caplog.records):
        assert time.monotonic() < deadline, f"never logged {text!r}"
        await asyncio.sleep(0.05)


@dataclass
class Jammed:
    """A submitted task whose result every channel refuses until `jam` is deleted."""

    names: Names
    broker: Broker
    jam: Queue
    task_id: str
    runs: list[str]


@contextlib.asynccontextmanager
async def jammed(amqp_url: str) -> AsyncIterator[Jammed]:
    """A queue bound to the results exchange that holds nothing, and one task submitted."""
    names = make_names()
    runs: list[str] = []
    connection = await connect(amqp_url, robust=False)
    async with connection, await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        await broker.declare(names.topology)
        channel = await connection.channel()
        full = {"x-max-length": 0, "x-overflow": "reject-publish"}
        jam = await channel.declare_queue(
            f"{names.result_queue}.jam", arguments=full, auto_delete=True
        )
        await jam.bind(names.results, "#")
        task_id = await TaskPublisher(await broker.publisher(), names.topology).submit(
            names.send, Numbers(values=[1, 2])
        )
        yield Jammed(names, broker, jam, task_id, runs)


def counting(runs: list[str]) -> Handler:
    async def total(payload: Numbers, context: TaskContext) -> dict[str, Any]:
        runs.append(context.task_id)
        return {"sum": sum(payload.values)}

    return total


async def test_a_refused_result_is_published_again_and_the_task_runs_once(
    amqp_url: str, workers: InProcessWorkers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spectask.runtime.consumer")
    async with jammed(amqp_url) as case:
        await workers.start(case.broker, case.names, counting(case.runs))
        await wait_logged(caplog, REFUSED)
        assert case.runs == [case.task_id]  # held, not requeued: the handler ran once
        await case.jam.delete(if_unused=False, if_empty=False)
        [result] = await drain(amqp_url, case.names.result_queue, 1, timeout=20)
        [stats] = await workers.stop_all()
    assert json.loads(result.body)["task_id"] == case.task_id
    assert case.runs == [case.task_id]
    assert (stats.succeeded, stats.requeued) == (1, 0)
    assert await depth(amqp_url, case.names.queue) == 0  # acked once its result was confirmed
    assert any("the broker took its next hops after" in r.getMessage() for r in caplog.records)


async def test_a_hop_refused_for_seconds_goes_on_on_a_new_channel(
    amqp_url: str, workers: InProcessWorkers, caplog: pytest.LogCaptureFixture
) -> None:
    """After a quorum queue's leader was killed, one channel of a worker went on nacking every
    publish for minutes while the other workers' channels on the same node published fine
    (tests/test_cluster.py: drains of 60-180 s, and tasks unsettled at its deadline). A hop
    still refused after RENEW_CHANNEL_AFTER_SECONDS is published on a fresh channel: here the
    jam refuses on every channel, so the worker renews its channel once (RENEW_SECONDS), keeps
    the task held, and the result goes out, once, on the new channel when the jam is gone."""
    caplog.set_level(logging.INFO, logger="spectask.runtime.consumer")
    async with jammed(amqp_url) as case:
        await workers.start(case.broker, case.names, counting(case.runs))
        await wait_logged(caplog, RENEWED)
        assert case.runs == [case.task_id]  # held, not requeued, across the renewal
        await case.jam.delete(if_unused=False, if_empty=False)
        [result] = await drain(amqp_url, case.names.result_queue, 1, timeout=20)
        [stats] = await workers.stop_all()
    renewals = [r.getMessage() for r in caplog.records if RENEWED in r.getMessage()]
    assert len(renewals) == 1, renewals
    assert json.loads(result.body)["task_id"] == case.task_id
    assert case.runs == [case.task_id]
    assert (stats.succeeded, stats.requeued) == (1, 0)
    assert await depth(amqp_url, case.names.queue) == 0
