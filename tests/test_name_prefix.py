"""SPECTASK_NAME_PREFIX: two applications with the same spec share one vhost (issue 11).

Each application is a producer, a worker, a collector with its own store and the queue view of
its own prefix, on both transports (`any_url`). Each submits its own batch; each worker must
run exactly its own application's tasks, each status RPC must answer SUCCEEDED for its own
tasks and UNKNOWN for the other's, and each queue view and worker watch (`spectask queues`,
`spectask workers`) must list only its own names and worker. Then
the unit of the transform: every exchange and queue name of
the generated topology and routes is prefixed once, and routing keys and the default exchange
are not.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from generated import (
    collector as generated_collector,
    producer as generated_producer,
    worker as generated_worker,
)
from generated.models import DataStatistics
from generated.producer import ProducerClient
from generated.topology import POLICIES, TOPOLOGY
from generated.worker import WorkerApp
from spectask.collector import add_store_handlers, store_result
from spectask.errors import PermanentTaskError
from spectask.protocol.models import TaskState
from spectask.queues import QueueSource
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.topology import Naming
from spectask.store import open_store
from spectask.workers import WorkerWatch
from tests.cli_support import spectask

pytestmark = pytest.mark.timeout(120)

TASKS = 5


class App:
    """One application: its prefix, the tasks its worker ran, its worker's stop switch."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ran: list[str] = []
        self.stop = asyncio.Event()

    def config(self, url: str) -> RuntimeConfig:
        return RuntimeConfig(amqp_url=url, name_prefix=self.prefix, shutdown_timeout=5)


@asynccontextmanager
async def running_worker(app: App, url: str) -> AsyncIterator[Broker]:
    worker = WorkerApp()

    async def record(payload: Any, context: TaskContext) -> dict[str, Any]:
        app.ran.append(context.task_id)
        if payload.values and payload.values[0] < 0:
            raise PermanentTaskError("negative values are refused")  # a dead letter at once
        return {"count": len(payload.values)}

    worker.process_data_aggregate(record)
    worker.process_data_detect_patterns(record)
    worker.process_data_statistics(record)
    async with await Broker.connect(app.config(url), name=f"w-{app.prefix}") as broker:
        run = asyncio.create_task(
            worker.run(broker, worker_id=app.prefix, task_types=["data_analysis"], stop=app.stop)
        )
        try:
            yield broker
        finally:
            app.stop.set()
            await asyncio.wait_for(run, timeout=30)


@asynccontextmanager
async def running_collector(app: App, url: str, store_url: str) -> AsyncIterator[None]:
    collector = generated_collector.CollectorApp()
    store = await open_store(store_url)
    add_store_handlers(collector, store)
    collector.collect_result(store_result(store))
    stop = asyncio.Event()
    async with await Broker.connect(app.config(url), name=f"c-{app.prefix}") as broker:
        run = asyncio.create_task(collector.run(broker, worker_id=f"c-{app.prefix}", stop=stop))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(run, timeout=30)
            await store.close()


async def test_two_prefixes_on_one_vhost_do_not_see_each_others_tasks(
    any_url: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    first, second = App(f"a{run}."), App(f"b{run}.")
    async with AsyncExitStack() as stack:
        for app in (first, second):
            store_url = f"sqlite:///{tmp_path / (app.prefix + 'db')}"
            await stack.enter_async_context(running_worker(app, any_url))
            await stack.enter_async_context(running_collector(app, any_url, store_url))
        submitted: dict[str, list[str]] = {}
        clients: dict[str, ProducerClient] = {}
        for app in (first, second):
            broker = await stack.enter_async_context(
                await Broker.connect(app.config(any_url), name=f"p-{app.prefix}")
            )
            client = clients[app.prefix] = await ProducerClient.open(broker)
            submitted[app.prefix] = [
                await client.submit_data_statistics(DataStatistics(values=[i, 1.0]))
                for i in range(TASKS)
            ]
            report = await QueueSource(broker, TOPOLOGY).report()
            listed = [queue.name for queue in report.queues]
            assert listed and all(name.startswith(app.prefix) for name in listed), listed
            watch = WorkerWatch(broker)  # `spectask workers`: this application's stream only
            await watch.start()
            try:
                await asyncio.wait_for(watch.received.wait(), timeout=30)
                assert {view.heartbeat.worker_id for view in watch.board.views()} == {app.prefix}
            finally:
                await watch.close()
        for app, other in ((first, second), (second, first)):
            client = clients[app.prefix]
            views = await client.wait(submitted[app.prefix], timeout=60)
            assert {view.state for view in views.values()} == {TaskState.SUCCEEDED}
            # the other application's tasks are unknown here: its collector stored them
            reply = await client.get_status(submitted[other.prefix])
            assert {view.state for view in reply.tasks} == {TaskState.UNKNOWN}
    assert sorted(first.ran) == sorted(submitted[first.prefix])
    assert sorted(second.ran) == sorted(submitted[second.prefix])


async def test_spectask_dlq_reads_the_dead_letters_of_its_own_prefix(amqp_url: str) -> None:
    app = App(f"d{uuid.uuid4().hex[:8]}.")
    async with running_worker(app, amqp_url):
        async with await Broker.connect(app.config(amqp_url), name="p") as broker:
            client = await ProducerClient.open(broker)
            dead = await client.submit_data_statistics(DataStatistics(values=[-1.0]))
        env = {**os.environ, "AMQP_URL": amqp_url, "SPECTASK_NAME_PREFIX": app.prefix}
        deadline = time.monotonic() + 60
        while True:
            done = await asyncio.to_thread(
                spectask, env, "dlq", "list", "--app", "generated", "--json"
            )
            assert done.returncode == 0, done.stderr
            views = json.loads(done.stdout)
            if views:
                break
            assert time.monotonic() < deadline, "no dead letter under the prefix"
            await asyncio.sleep(0.2)
    assert [(view["task_id"], view["reason"]) for view in views] == [(dead, "permanent")]
    assert views[0]["origin_queue"] == f"{app.prefix}tasks.data_analysis"
    assert views[0]["origin_exchange"] == f"{app.prefix}tasks"


def test_the_transform_prefixes_every_name_once() -> None:
    naming = Naming("shop.")
    topology = naming.topology(TOPOLOGY)
    assert [e.name for e in topology.exchanges] == ["shop." + e.name for e in TOPOLOGY.exchanges]
    assert [q.name for q in topology.queues] == ["shop." + q.name for q in TOPOLOGY.queues]
    exchanges = {e.name for e in topology.exchanges}
    for queue in topology.queues:
        assert {b.exchange for b in queue.bindings} <= exchanges, queue
        dead_letter_to = queue.arguments_dict().get("x-dead-letter-exchange")
        assert dead_letter_to is None or dead_letter_to in exchanges, queue
    assert topology.dead_letter_exchange == "shop.dead_letter"
    for route in generated_producer.SEND_ROUTES + generated_worker.SEND_ROUTES:
        named = naming.send(route)
        assert named.exchange == "shop." + route.exchange
        assert named.routing_key == route.routing_key  # keys are not names of things
    queues = {q.name for q in topology.queues}
    for receive in generated_worker.RECEIVE_ROUTES + generated_collector.RECEIVE_ROUTES:
        named_receive = naming.receive(receive)
        assert named_receive.queue in queues
        assert {t.exchange for t in named_receive.policy.retry.tiers} <= exchanges
    [status] = generated_producer.RPC_ROUTES
    assert naming.rpc(status).exchange == "shop." + status.exchange
    assert any(policy.retry.tiers for policy in POLICIES.values())  # the tiers were checked
    unchanged = Naming("")
    assert unchanged.topology(TOPOLOGY) is TOPOLOGY
    assert unchanged.name("") == "" and naming.name("") == ""  # the default exchange


def test_a_prefix_that_is_not_a_plain_name_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="name_prefix"):
        RuntimeConfig(name_prefix="a b")
    env = {**os.environ, "SPECTASK_NAME_PREFIX": "a b", "AMQP_URL": "amqp://127.0.0.1:1/"}
    done = spectask(env, "queues", "--app", "generated")
    assert done.returncode != 0
    assert "SPECTASK_NAME_PREFIX" in done.stderr and "Traceback" not in done.stderr, done.stderr
