"""Priorities and queue types: urgent tasks overtake a backlog; quorum mode says what it can do.

Priority is the broker's job (classic queues with `x-max-priority`): it hands out the highest
priority ready message first. A worker only ever holds its prefetch window, so an urgent task
waits at most for the tasks already delivered (prefetch) plus the one running.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiormq
import pytest
from PIL import Image

from generated.topology import TOPOLOGY
from spectask.errors import ConfigError
from spectask.runtime.broker import Broker, parse_version, queue_arguments, quorum_priority_note
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.topology import BindingSpec, ExchangeSpec, QueueSpec, Topology
from tests.brokers import unique_name
from tests.workqueue_support import (
    ROOT,
    ResultCollector,
    WorkerProcess,
    reset_topology,
    submit,
    wait_ready,
)

pytestmark = pytest.mark.timeout(300)

FILTER = "image_processing.filter"
NORMALS, URGENTS = 200, 10
BOUND = 20  # every urgent task finishes before this many of the backlog


@pytest.fixture
async def collector(amqp_url: str) -> AsyncIterator[ResultCollector]:
    await reset_topology(amqp_url)
    results = ResultCollector(amqp_url)
    await results.start()
    try:
        yield results
    finally:
        await results.close()


async def test_urgent_tasks_overtake_a_backlog(
    amqp_url: str, tmp_path: Path, collector: ResultCollector
) -> None:
    image = tmp_path / "image.png"
    Image.radial_gradient("L").resize((300, 300)).convert("RGB").save(image)
    params = {"image": {"path": str(image)}, "filter": "blur", "radius": 3}
    worker = WorkerProcess(
        "prio",
        amqp_url,
        types="image_processing",
        prefetch=1,
        concurrency=1,
        output_dir=tmp_path / "out",
        input_root=tmp_path,
        log_dir=tmp_path,
    )
    try:
        wait_ready(worker)
        # One task first, so the worker is warm and busy while the backlog and then the
        # urgent tasks arrive (a cold start would let every task queue up before the first).
        warm = await submit(amqp_url, [("warm-up", FILTER, params)])
        await collector.wait_for(warm, timeout=60)
        normal = await submit(
            amqp_url, [(f"normal-{n:03d}", FILTER, params) for n in range(NORMALS)]
        )
        urgent = await submit(
            amqp_url,
            [(f"urgent-{n:02d}", FILTER, params) for n in range(URGENTS)],
            priority="urgent",
        )
        await collector.wait_for([*normal, *urgent], timeout=240)
    finally:
        worker.stop()
    finished = sorted(
        (document["finished_at"], task_id)
        for task_id in [*normal, *urgent]
        for document in collector.results[task_id]
    )
    assert all(
        document["status"] == "succeeded"
        for documents in collector.results.values()
        for document in documents
    )
    order = [task_id for _, task_id in finished]
    last_urgent = max(order.index(task_id) for task_id in urgent)
    normal_before = sum(1 for task_id in order[:last_urgent] if task_id.startswith("normal-"))
    print(f"\n{normal_before} of {NORMALS} backlog tasks finished before the last urgent one")
    assert normal_before < BOUND, order[: last_urgent + 1]


# --- queue types -----------------------------------------------------------------------------

TASK_QUEUE = QueueSpec(
    "tasks.x",
    arguments=(("x-delivery-limit", 5), ("x-max-priority", 10), ("x-queue-type", "classic")),
)


def test_classic_mode_keeps_the_spec_arguments_but_the_delivery_limit() -> None:
    # Classic queues reject x-delivery-limit (PRECONDITION_FAILED): it is for quorum queues.
    assert queue_arguments(TASK_QUEUE, "classic", (3, 10, 8)) == {
        "x-max-priority": 10,
        "x-queue-type": "classic",
    }


def test_quorum_mode_with_priorities_is_refused_before_rabbitmq_4() -> None:
    with pytest.raises(ConfigError) as refused:
        queue_arguments(TASK_QUEUE, "quorum", (3, 10, 8))
    message = str(refused.value)
    assert "RabbitMQ 3.10.8 does not support priorities on quorum queues" in message
    assert "use classic queues" in message and "RabbitMQ >= 4.0" in message


def test_quorum_mode_on_rabbitmq_4_keeps_the_delivery_limit_not_x_max_priority() -> None:
    # 4.x quorum queues honour priorities on their own (two levels) and refuse the argument.
    assert queue_arguments(TASK_QUEUE, "quorum", (4, 0, 2)) == {
        "x-delivery-limit": 5,
        "x-queue-type": "quorum",
    }
    note = quorum_priority_note(TOPOLOGY.priorities)
    assert "normal (0-4): low; high (5+): normal, high, urgent" in note


def test_only_queues_that_name_a_type_follow_the_queue_type() -> None:
    results = QueueSpec("results")
    assert queue_arguments(results, "quorum", (3, 10, 8)) == {}
    stream = QueueSpec("log", arguments=(("x-queue-type", "stream"),))
    assert queue_arguments(stream, "quorum", (3, 10, 8)) == {"x-queue-type": "stream"}
    with pytest.raises(ConfigError, match="must be durable"):
        queue_arguments(
            QueueSpec("q", durable=False, arguments=TASK_QUEUE.arguments), "quorum", None
        )


def test_parse_version() -> None:
    assert parse_version("3.10.8") == (3, 10, 8)
    assert parse_version(b"4.0.0-rc.1") == (4, 0, 0)
    assert parse_version("4.1") == (4, 1, 0)
    assert parse_version(None) is None and parse_version("unknown") is None


def run_cli(main: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMQP_URL": url, "SPECTASK_QUEUE_TYPE": "quorum"}
    return subprocess.run(
        [sys.executable, str(ROOT / main), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "main, args",
    [
        ("main-worker.py", ("quorum-worker",)),
        ("main-producer.py", ("--task", "data_analysis.statistics", "--params", '{"values":[1]}')),
    ],
)
async def test_quorum_mode_refuses_to_start_with_priorities_on_rabbitmq_3(
    amqp_url: str, main: str, args: tuple[str, ...]
) -> None:
    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        version = broker.server_version()
    assert version is not None
    if version >= (4, 0):
        # No refusal to see on this broker: check what it gets instead of skipping.
        for queue in TOPOLOGY.queues:
            if queue.arguments_dict().get("x-queue-type") == "classic":
                arguments = queue_arguments(queue, "quorum", version)
                assert arguments["x-queue-type"] == "quorum"
                assert "x-max-priority" not in arguments
        return
    done = await asyncio.to_thread(run_cli, main, amqp_url, *args)
    assert done.returncode == 1, done.stderr
    assert "does not support priorities on quorum queues" in done.stderr
    assert "use classic queues" in done.stderr and "RabbitMQ >= 4.0" in done.stderr
    assert "Traceback" not in done.stderr


async def test_quorum_mode_declares_quorum_queues_without_priorities(amqp_url: str) -> None:
    """A spec-like topology without priorities: the task queue becomes a quorum queue."""
    base = unique_name("qq")
    exchange, queue = f"{base}.tasks", f"{base}.work"
    topology = Topology(
        exchanges=(ExchangeSpec(exchange),),
        queues=(
            QueueSpec(
                queue,
                arguments=(("x-delivery-limit", 3), ("x-queue-type", "classic")),
                bindings=(BindingSpec(exchange, "work.#"),),
            ),
        ),
    )
    quorum = RuntimeConfig(amqp_url=amqp_url, queue_type="quorum")
    try:
        async with await Broker.connect(quorum) as broker:
            await broker.declare(topology)
            await broker.declare(topology)  # idempotent
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            # Equivalent arguments: accepted; the queue really is a quorum queue.
            await channel.declare_queue(
                queue, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 3}
            )
            target = await channel.get_exchange(exchange)
            await target.publish(aio_pika.Message(b"{}"), routing_key="work.one")
            work = await channel.get_queue(queue)
            first = await work.get(timeout=5)
            await first.nack(requeue=True)
            second = await work.get(timeout=5)
            assert second.headers.get("x-delivery-count") == 1  # counted by quorum queues only
            await second.ack()
            with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
                await (await connection.channel()).declare_queue(
                    queue, durable=True, arguments={"x-queue-type": "classic"}
                )
        # Declaring it as classic now: a clear error, not a bare PRECONDITION_FAILED.
        async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
            with pytest.raises(
                ConfigError, match=r"(?s)refused to declare queue .*drain and delete"
            ):
                await broker.declare(topology)
    finally:
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)
            await channel.exchange_delete(exchange)
