"""`spectask queues` and the dashboard's queue view from the management HTTP API (issue 10).

A throwaway node with the rabbitmq_management plugin (its own HTTP port): unacked counts and
consumers come from the API in one request; bad credentials fall back to passive declarations
and say why.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from generated.topology import TOPOLOGY
from spectask.devbroker.node import LocalNode
from spectask.queues import MANAGEMENT, PASSIVE, QueueSource
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from tests.brokers import require_rabbitmq_installed, throwaway_node
from tests.cli_support import spectask
from tests.dashboard_support import free_port
from tests.workqueue_support import submit

pytestmark = pytest.mark.timeout(240)


class ManagedNode(LocalNode):
    """A LocalNode with the management plugin on its own port, statistics every 0.5 s."""

    http_port = 0

    def prepare(self) -> None:
        super().prepare()
        (self.base_dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        with (self.base_dir / "rabbitmq.conf").open("a") as conf:
            conf.write(
                f"management.tcp.port = {self.http_port}\n"
                "management.tcp.ip = 127.0.0.1\n"
                "collect_statistics_interval = 500\n"
            )


@pytest.fixture(scope="module")
def managed() -> Iterator[ManagedNode]:
    require_rabbitmq_installed()

    def make(base: Path, name: str) -> ManagedNode:
        node = ManagedNode(base, name=name)
        node.http_port = free_port()
        return node

    yield from throwaway_node("spectask-mgmt", make)


async def test_queues_from_the_management_api(managed: ManagedNode) -> None:
    url = managed.url
    management = f"http://guest:guest@127.0.0.1:{managed.http_port}"
    broker = await Broker.connect(RuntimeConfig(amqp_url=url, management_url=management))
    try:
        await broker.declare(TOPOLOGY)
        await submit(
            url, [(f"m-{n}", "data_analysis.statistics", {"values": [1.0]}) for n in range(4)]
        )
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1)
            queue = await channel.get_queue("tasks.data_analysis")
            held = asyncio.Event()

            async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                held.set()  # never acked: one unacked delivery while we look

            await queue.consume(hold)
            await asyncio.wait_for(held.wait(), 20)
            source = QueueSource(broker, TOPOLOGY)
            async with asyncio.timeout(30):
                while True:  # the API's statistics lag the broker by one interval
                    report = await source.report()
                    assert report.source == MANAGEMENT, report.note
                    depth = next(q for q in report.queues if q.name == "tasks.data_analysis")
                    if (depth.ready, depth.unacked, depth.consumers) == (3, 1, 1):
                        break
                    await asyncio.sleep(0.5)
            env = {**os.environ, "AMQP_URL": url, "SPECTASK_MANAGEMENT_URL": management}
            done = await asyncio.to_thread(spectask, env, "queues", "--json")
            assert done.returncode == 0, done.stderr
            listed = json.loads(done.stdout)
            assert listed["source"] == MANAGEMENT and listed["note"] is None
            row = next(q for q in listed["queues"] if q["name"] == "tasks.data_analysis")
            assert row["unacked"] == 1 and row["consumers"] == 1
            wrong = {
                **env,
                "SPECTASK_MANAGEMENT_URL": management.replace("guest:guest", "guest:nope"),
            }
            refused = await asyncio.to_thread(spectask, wrong, "queues", "--json")
            assert refused.returncode == 0, refused.stderr
            fallback = json.loads(refused.stdout)
            assert fallback["source"] == PASSIVE and "Unauthorized" in fallback["note"]
    finally:
        await broker.close()
