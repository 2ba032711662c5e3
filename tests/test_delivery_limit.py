"""A poison task that kills its worker, stopped by a quorum queue's delivery limit (issue 11).

With SPECTASK_QUEUE_TYPE=quorum every task queue gets `x-delivery-limit` (the policy's
`deliveryLimit`, here data_analysis's 5, else spectask.codegen.queues.DEFAULT_DELIVERY_LIMIT)
and the protocol's dead-letter exchange. Real worker processes serve `tests.poison_app`, whose
handler ends its process (`os._exit`) on the poison: each delivery kills one worker, the test
starts another, and after the limit the broker itself dead-letters the task. The test then
checks what a user sees: `spectask dlq list` and the collector's store both say
`delivery_limit`, and the innocent task behind the poison succeeded.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from generated.models import DataStatistics
from generated.producer import ProducerClient
from generated.topology import TOPOLOGY
from spectask.devbroker.node import LocalNode
from spectask.protocol.models import TaskState
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.store import open_store
from tests.brokers import require_rabbitmq_installed, throwaway_node
from tests.cli_support import spectask
from tests.poison_app import DIED, POISON
from tests.process_support import Command

pytestmark = pytest.mark.timeout(300)

QUORUM = {"SPECTASK_QUEUE_TYPE": "quorum", "SPECTASK_QUORUM_WITHOUT_PRIORITIES": "true"}
WORKERS_AT_ONCE = 3
DEADLINE = 240.0
TASK_QUEUE = "tasks.data_analysis"
# the spec's x-spectask-policy deliveryLimit of data_analysis (5: six deaths, not eleven)
LIMIT = int(
    next(q for q in TOPOLOGY.queues if q.name == TASK_QUEUE).arguments_dict()["x-delivery-limit"]
)


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    require_rabbitmq_installed()
    yield from throwaway_node("spectask-delivery-limit")


def _env(node: LocalNode, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        **QUORUM,
        "AMQP_URL": node.url,
        "PYTHONUNBUFFERED": "1",
        "STORE_URL": f"sqlite:///{tmp_path / 'tasks.db'}",
        "SPECTASK_SHUTDOWN_TIMEOUT": "5",
        # one task per worker at a time: the broker counts a delivery against every task a
        # killed worker held, so a prefetched innocent task would die with the poison
        "SPECTASK_PREFETCH": "1",
        "SPECTASK_CONCURRENCY": "1",
    }


async def _submit(url: str) -> tuple[str, str]:
    config = RuntimeConfig(amqp_url=url, queue_type="quorum", quorum_without_priorities=True)
    async with await Broker.connect(config, name="test-delivery-limit") as broker:
        client = await ProducerClient.open(broker)
        poison = await client.submit_data_statistics(DataStatistics(values=[POISON, 1.0]))
        innocent = await client.submit_data_statistics(DataStatistics(values=[1.0, 2.0]))
    return poison, innocent


def _queue_arguments(node: LocalNode, name: str) -> dict[str, Any]:
    listed = json.loads(node.ctl("list_queues", "name", "arguments", "--formatter", "json").stdout)
    found = [entry["arguments"] for entry in listed if entry["name"] == name]
    assert found, f"no queue {name!r} on the node: {listed}"
    # rabbitmqctl's JSON lists a queue's arguments as [name, type, value] triples
    return {str(entry[0]): entry[-1] for entry in found[0]}


def _dead_letters(env: dict[str, str]) -> list[dict[str, Any]]:
    done = spectask(env, "dlq", "list", "--app", "generated", "--json")
    assert done.returncode == 0, done.stderr
    views: list[dict[str, Any]] = json.loads(done.stdout)
    return views


async def _record_state(url: str, task_id: str) -> tuple[TaskState | None, str | None]:
    store = await open_store(url)
    try:
        record = await store.get(task_id)
    finally:
        await store.close()
    return (None, None) if record is None else (record.state, record.dead_reason)


def test_a_poison_task_that_kills_its_worker_is_dead_lettered_after_the_delivery_limit(
    node: LocalNode, tmp_path: Path
) -> None:
    env = _env(node, tmp_path)
    commands: list[Command] = []
    try:
        collector = Command(tmp_path, "collector", "collect", "--app", "generated", env=env)
        commands.append(collector)
        collector.wait_for("consuming")
        poison, innocent = asyncio.run(_submit(node.url))
        arguments = _queue_arguments(node, TASK_QUEUE)
        assert arguments["x-queue-type"] == "quorum", arguments
        assert arguments["x-delivery-limit"] == LIMIT, arguments
        assert arguments["x-dead-letter-exchange"] == "dead_letter", arguments

        deaths, started = 0, 0
        alive: list[Command] = []
        deadline = time.monotonic() + DEADLINE
        while not _has_dead_letter(node):
            assert time.monotonic() < deadline, f"no dead letter after {deaths} worker deaths"
            for worker in [w for w in alive if w.process.poll() is not None]:
                assert worker.process.returncode == DIED, worker.output()
                deaths += 1
                alive.remove(worker)
            while len(alive) < WORKERS_AT_ONCE:
                started += 1
                args = ("worker", f"w{started}", "--app", "tests.poison_app:app")
                worker = Command(
                    tmp_path, f"w{started}", *args, "--types", "data_analysis", env=env
                )
                commands.append(worker)
                alive.append(worker)
            time.sleep(0.2)
        for worker in alive:  # a death may still be on its way out
            if worker.process.poll() is None:
                continue
            deaths += worker.process.returncode == DIED
        # a delivery per death: the first one plus LIMIT redeliveries
        assert deaths == LIMIT + 1, deaths

        [view] = [v for v in _dead_letters(env) if v["task_id"] == poison]
        assert view["reason"] == "delivery_limit", view
        assert "x-delivery-limit" in view["error"], view
        assert view["origin_queue"] == TASK_QUEUE, view
        assert view["origin_exchange"] == "tasks", view
        assert view["origin_routing_key"] == "data_analysis.statistics", view

        # The quorum queue hands a returned delivery out before the rest, so when workers come
        # up one by one (a loaded machine) the poison kills every one of them and the last
        # death leaves none to run the innocent task: one more worker, the poison now gone.
        if not [w for w in alive if w.process.poll() is None]:
            args = ("worker", "w-after", "--app", "tests.poison_app:app")
            commands.append(
                Command(tmp_path, "w-after", *args, "--types", "data_analysis", env=env)
            )

        store_url = env["STORE_URL"]
        while asyncio.run(_record_state(store_url, poison)) != (TaskState.DEAD, "delivery_limit"):
            assert time.monotonic() < deadline, asyncio.run(_record_state(store_url, poison))
            time.sleep(0.2)
        while asyncio.run(_record_state(store_url, innocent))[0] is not TaskState.SUCCEEDED:
            running = [w.log_path.stem for w in commands[1:] if w.process.poll() is None]
            assert time.monotonic() < deadline, (
                asyncio.run(_record_state(store_url, innocent)),
                f"{_queue_depth(node, TASK_QUEUE)} message(s) in {TASK_QUEUE}",
                f"workers running: {running}",
            )
            time.sleep(0.2)
        assert "Traceback" not in collector.output(), collector.output()
    finally:
        for command in commands:
            command.close()


def _has_dead_letter(node: LocalNode) -> bool:
    """Whether the broker holds a message in the dead-letter queue (`spectask dlq` reads it)."""
    return _queue_depth(node, "dead_letter") > 0


def _queue_depth(node: LocalNode, name: str) -> int:
    listed = json.loads(node.ctl("list_queues", "name", "messages", "--formatter", "json").stdout)
    return sum(int(entry["messages"]) for entry in listed if entry["name"] == name)


def test_only_the_newest_broker_death_names_the_reason() -> None:
    """A task that waited in a retry tier carries that tier's `expired` death as x-first-death;
    the delivery limit is the newest record (first in x-death), and only it counts."""
    from datetime import UTC, datetime

    from spectask.runtime.deaths import with_reason

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    limit = {"reason": "delivery_limit", "queue": TASK_QUEUE, "exchange": "tasks", "time": when}
    expired = {"reason": "expired", "queue": "retry.1000ms", "exchange": "retry.1000ms"}
    headers = {
        "x-death": [{**limit, "routing-keys": ["data_analysis.statistics"]}, expired],
        "x-first-death-reason": "expired",
        "x-spectask-attempt": 2,
    }
    filled = with_reason(headers)
    assert filled["x-spectask-reason"] == "delivery_limit"
    assert filled["x-spectask-attempts"] == 2
    assert filled["x-spectask-origin-queue"] == TASK_QUEUE
    assert filled["x-spectask-origin-routing-key"] == "data_analysis.statistics"
    assert filled["x-spectask-last-failure-at"] == when.isoformat()
    # a retry tier's own death, or a dead letter spectask wrote itself, is left as it is
    assert with_reason({"x-death": [expired]}) == {"x-death": [expired]}
    written = {"x-spectask-reason": "timeout", "x-death": [limit]}
    assert with_reason(written) == written


def test_every_task_queue_has_a_delivery_limit_and_no_other_queue_does() -> None:
    """The spec's policy (data_analysis: 5) or the default; result, dead-letter, collector and
    retry queues have none (a limit on `dead_letter` would dead-letter into itself)."""
    from generated.topology import POLICIES
    from spectask.codegen.queues import DEFAULT_DELIVERY_LIMIT

    limits = {
        q.name: q.arguments_dict().get("x-delivery-limit")
        for q in TOPOLOGY.queues
        if "x-delivery-limit" in q.arguments_dict()
    }
    assert limits == {
        f"tasks.{task_type}": 5 if task_type == "data_analysis" else DEFAULT_DELIVERY_LIMIT
        for task_type in POLICIES
    }
    assert TOPOLOGY.dead_letter_exchange == "dead_letter"
