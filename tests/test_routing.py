"""Routing is the spec's: each task type reaches only its queue, an unknown key is an error,
and a new binding written in the spec alone (no code change) routes tasks end to end.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from generated.collector import COLLECT_SUBMITTED
from generated.producer import SEND_ROUTES as ALL_SEND_ROUTES
from generated.topology import POLICIES, TOPOLOGY
from spectask.errors import UnroutableError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.transport import IncomingMessage, connect
from tests.workqueue_support import ROOT, queue_depth, reset_topology
from workloads.samples import SAMPLES

pytestmark = pytest.mark.timeout(120)

# The worker queues bound to the tasks exchange; the collector's copy queue is checked apart.
TASK_QUEUES = sorted(
    queue.name
    for queue in TOPOLOGY.queues
    if any(binding.exchange == "tasks" for binding in queue.bindings)
    and queue.name != COLLECT_SUBMITTED.queue
)
AUDIT_QUEUE = "audit.report_email"
SEND_ROUTES = [route for route in ALL_SEND_ROUTES if route.task_type in POLICIES]  # not cancels


async def take_all(url: str, queue: str) -> list[IncomingMessage]:
    """Every message now in `queue` (acked, so the queue is left empty)."""
    taken = []
    async with await connect(url, robust=False) as connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue)
        while (message := await source.get(fail=False)) is not None:
            await message.ack()
            taken.append(message)
    return taken


async def test_each_task_type_lands_only_in_its_own_queue(any_url: str) -> None:
    await reset_topology(any_url)
    rng = random.Random(7)
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        publisher = TaskPublisher(await broker.publisher(), TOPOLOGY)
        for route in SEND_ROUTES:
            payload = route.model.model_validate(SAMPLES[route.message_type](rng))
            await publisher.submit(route, payload, task_id=f"route-{route.message_type}")
    landed: dict[str, set[str]] = defaultdict(set)
    for queue in TASK_QUEUES:
        for message in await take_all(any_url, queue):
            landed[queue].add(message.routing_key or "")
    expected = {
        f"tasks.{task_type}": {r.routing_key for r in SEND_ROUTES if r.task_type == task_type}
        for task_type in {route.task_type for route in SEND_ROUTES}
    }
    assert dict(landed) == expected
    assert sum(len(keys) for keys in landed.values()) == len(SEND_ROUTES) == 9
    copies = await take_all(any_url, COLLECT_SUBMITTED.queue)  # and one copy for the collector
    assert sorted(m.message_id or "" for m in copies) == sorted(
        f"route-{route.message_type}" for route in SEND_ROUTES
    )


async def test_a_routing_key_no_queue_binds_is_refused_at_the_producer(any_url: str) -> None:
    await reset_topology(any_url)
    route = next(r for r in SEND_ROUTES if r.message_type == "image_processing.resize")
    stray = replace(route, routing_key="video_processing.encode")
    payload = route.model.model_validate(SAMPLES[route.message_type](random.Random(1)))
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        publisher = TaskPublisher(await broker.publisher(), TOPOLOGY)
        with pytest.raises(UnroutableError, match=r"'video_processing\.encode' matched no queue"):
            await publisher.submit(stray, payload)
    for queue in TASK_QUEUES:
        assert await queue_depth(any_url, queue) == 0


def add_audit_channel(spec_dir: Path) -> None:
    """The spec-only change: a queue channel bound to `tasks` for one routing key."""
    path = spec_dir / "common.asyncapi.yaml"
    document = yaml.safe_load(path.read_text())
    document["channels"]["emailAudit"] = {
        "address": "audit/report_email",
        "description": "A copy of every report e-mail task, for auditing.",
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": AUDIT_QUEUE,
                    "durable": True,
                    "exclusive": False,
                    "autoDelete": False,
                    "vhost": "/",
                },
                "x-spectask-bindings": [
                    {"exchange": "tasks", "routingKey": "report_generation.email"}
                ],
                "bindingVersion": "0.3.0",
            }
        },
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))


PRODUCER = textwrap.dedent(
    """
    import asyncio, sys
    import generated
    from generated import models
    from generated.producer import ProducerClient
    from generated.topology import POLICIES, TOPOLOGY
    from spectask.runtime.broker import Broker
    from spectask.runtime.config import RuntimeConfig
    from spectask.runtime.producer import TaskPublisher

    async def main(url, task_id):
        print(generated.__file__)
        async with await Broker.connect(RuntimeConfig(amqp_url=url)) as broker:
            await broker.declare(TOPOLOGY)
            client = ProducerClient(TaskPublisher(await broker.publisher(), TOPOLOGY))
            payload = models.ReportEmail.model_validate(
                {"title": "Q3", "series": [1.0, 2.0], "to": ["ops@example.org"]}
            )
            print(await client.submit_report_email(payload, task_id=task_id))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_binding_added_in_the_spec_alone_routes_end_to_end(
    amqp_url: str, tmp_path: Path
) -> None:
    shutil.copytree(ROOT / "spec", tmp_path / "spec")
    add_audit_channel(tmp_path / "spec")
    generate = [sys.executable, "-m", "spectask.codegen"]
    generate += ["--spec", str(tmp_path / "spec"), "--out", str(tmp_path / "generated")]
    await asyncio.to_thread(subprocess.run, generate, check=True, capture_output=True, timeout=120)
    assert AUDIT_QUEUE in (tmp_path / "generated" / "topology.py").read_text()

    await reset_topology(amqp_url)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", PRODUCER, amqp_url, "audited-1"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        module_file, task_id = done.stdout.split()
        assert module_file.startswith(str(tmp_path)), "the copied spec's code must be used"
        assert task_id == "audited-1"
        queues = (*TASK_QUEUES, COLLECT_SUBMITTED.queue, AUDIT_QUEUE)
        copies = {queue: await take_all(amqp_url, queue) for queue in queues}
        assert {q: [m.message_id for m in got] for q, got in copies.items() if got} == {
            "tasks.report_generation": ["audited-1"],
            COLLECT_SUBMITTED.queue: ["audited-1"],
            AUDIT_QUEUE: ["audited-1"],
        }
        [audited] = copies[AUDIT_QUEUE]
        assert audited.type == "report_generation.email"
        assert json.loads(audited.body)["to"] == ["ops@example.org"]
    finally:
        async with await connect(amqp_url, robust=False) as connection:
            channel = await connection.channel()
            await channel.queue_delete(AUDIT_QUEUE)
