"""`spectask topology apply|check`, SPECTASK_TOPOLOGY=check, and refused declarations.

A throwaway node with the management API; every test takes a fresh virtual host, so a
difference planted in one is never seen by another.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import aio_pika
import pytest

from generated.topology import TOPOLOGY
from spectask.errors import ConfigError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.topology_check import check
from tests.cli_support import spectask
from tests.secure_support import ManagementNode, management_node

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def node() -> Iterator[ManagementNode]:
    yield from management_node("spectask-topology")


@pytest.fixture
def vhost_url(node: ManagementNode) -> str:
    """A fresh virtual host, guest (administrator) allowed everything there; its URL."""
    vhost = f"topology-{uuid.uuid4().hex[:8]}"
    node.add_vhost(vhost)
    node.api("PUT", f"permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    return f"{node.url}{vhost}"


def run(node: ManagementNode, url: str, *args: str, **extra: str) -> tuple[int, str, str]:
    env = {**os.environ, "AMQP_URL": url, "SPECTASK_MANAGEMENT_URL": node.management_url}
    done = spectask({**env, **extra}, *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def test_apply_then_check_finds_no_difference(node: ManagementNode, vhost_url: str) -> None:
    code, out, _ = run(node, vhost_url, "topology", "apply")
    assert code == 0 and f"declared {len(TOPOLOGY.exchanges)} exchanges" in out
    code, out, _ = run(node, vhost_url, "topology", "check")
    assert code == 0, out
    assert out.startswith("source: management") and "the broker matches the spec" in out


async def plant(url: str) -> None:
    """Five differences: a missing queue, a missing binding, an extra queue, a queue with
    other arguments and an exchange of another type."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete("tasks.report_generation")
        collector = await channel.get_queue("collector.tasks")
        await collector.unbind("tasks", routing_key="data_analysis.#")
        await channel.declare_queue("stray", durable=True)
        await channel.queue_delete("tasks.data_analysis")
        await channel.declare_queue(
            "tasks.data_analysis", durable=True, arguments={"x-max-priority": 5}
        )
        await channel.exchange_delete("workers")
        await channel.declare_exchange("workers", type="direct", durable=True)


async def test_check_lists_every_planted_difference(node: ManagementNode, vhost_url: str) -> None:
    assert run(node, vhost_url, "topology", "apply")[0] == 0
    await plant(vhost_url)
    code, out, _ = run(node, vhost_url, "topology", "check")
    assert code == 1, out
    lines = out.splitlines()
    assert "missing queue 'tasks.report_generation'" in lines
    assert "missing binding tasks -> collector.tasks: key 'data_analysis.#'" in lines
    assert "extra queue 'stray': not in the spec" in lines
    assert "different queue 'tasks.data_analysis': argument x-max-priority=5 (spec: 10)" in lines
    assert "different queue 'tasks.data_analysis': argument x-queue-type missing" in out
    assert "different exchange 'workers': type direct (spec: topic)" in lines
    # the recreated queue and exchange lost their bindings too
    assert "missing binding tasks -> tasks.data_analysis: key 'data_analysis.#'" in lines
    assert "missing binding workers -> spectask.heartbeats: key 'heartbeat'" in lines
    assert lines[-1] == "8 difference(s); fix: `spectask topology apply`"
    code, out, _ = run(node, vhost_url, "topology", "check", "--json")
    report = json.loads(out)
    assert code == 1 and report["source"] == "management"
    assert {"kind": "missing", "entity": "queue 'tasks.report_generation'", "detail": ""} in (
        report["differences"]
    )


def test_without_the_management_api_check_uses_passive_declares(
    node: ManagementNode, vhost_url: str
) -> None:
    assert run(node, vhost_url, "topology", "apply")[0] == 0
    code, out, _ = run(
        node, vhost_url, "topology", "check", SPECTASK_MANAGEMENT_URL="http://127.0.0.1:1"
    )
    assert code == 0 and out.startswith("source: passive"), out
    assert "types, arguments, bindings and extra queues not checked" in out.splitlines()[0]


async def test_passive_check_reports_a_missing_queue(node: ManagementNode, vhost_url: str) -> None:
    assert run(node, vhost_url, "topology", "apply")[0] == 0
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        await (await connection.channel()).queue_delete("results")
    code, out, _ = run(
        node, vhost_url, "topology", "check", SPECTASK_MANAGEMENT_URL="http://127.0.0.1:1"
    )
    assert code == 1 and "missing queue 'results'" in out.splitlines()


def test_check_mode_names_what_is_missing_and_the_fix(node: ManagementNode, vhost_url: str) -> None:
    code, _, err = run(node, vhost_url, "produce", "--count", "1", SPECTASK_TOPOLOGY="check")
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith("error: the spec's exchange 'control', exchange 'dead_letter'")
    assert "are missing in virtual host" in line and "run `spectask topology apply`" in line
    assert run(node, vhost_url, "topology", "apply")[0] == 0
    code, _, err = run(node, vhost_url, "produce", "--count", "2", SPECTASK_TOPOLOGY="check")
    assert code == 0, err


async def test_a_foreign_exchange_of_another_type_is_one_line(
    node: ManagementNode, vhost_url: str
) -> None:
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        await (await connection.channel()).declare_exchange("tasks", type="direct", durable=True)
    code, _, err = run(node, vhost_url, "topology", "apply")
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith(
        "error: RabbitMQ refused to declare exchange 'tasks': it already exists with other "
        "settings: "
    )
    assert "the broker has type 'direct', the spec wants 'topic'" in line
    assert "a virtual host of its own" in line
    broker = await Broker.connect(RuntimeConfig(amqp_url=vhost_url))
    async with broker:
        with pytest.raises(ConfigError, match="exchange 'tasks': it already exists"):
            await broker.declare(TOPOLOGY)  # every process in declare mode says the same


async def test_a_queue_with_other_arguments_is_one_line(
    node: ManagementNode, vhost_url: str
) -> None:
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(
            "tasks.image_processing",
            durable=True,
            arguments={"x-max-priority": 3, "x-queue-type": "classic"},
        )
    code, _, err = run(node, vhost_url, "topology", "apply")
    assert code == 1
    [line] = err.strip().splitlines()
    assert "queue 'tasks.image_processing': it already exists with other settings" in line
    assert "the broker has x-max-priority '3', the spec wants '10'" in line
    assert "rabbitmqctl delete_queue tasks.image_processing" in line


async def test_check_follows_the_name_prefix(node: ManagementNode, vhost_url: str) -> None:
    """Two applications in one vhost (SPECTASK_NAME_PREFIX): each check sees only its own."""
    config = RuntimeConfig(amqp_url=vhost_url, management_url=node.management_url)
    one = await Broker.connect(config.model_copy(update={"name_prefix": "one-"}))
    two = await Broker.connect(config.model_copy(update={"name_prefix": "two-"}))
    async with one, two:
        await one.declare(TOPOLOGY)
        await two.declare(TOPOLOGY)
        assert (await check(one, TOPOLOGY)).differences == []
        channel = await one.channel()
        await channel.queue_delete("two-results")
        await channel.declare_queue("one-stray", durable=True)
        found = [str(d) for d in (await check(one, TOPOLOGY)).differences]
        assert found == ["extra queue 'one-stray': not in the spec"]
        found = [str(d) for d in (await check(two, TOPOLOGY)).differences]
        assert found == ["missing queue 'two-results'"]


@pytest.mark.memory
async def test_check_mode_on_the_in_memory_broker() -> None:
    """SPECTASK_TOPOLOGY=check behaves the same on the in-memory transport (make test-fast)."""
    checking = await Broker.in_memory(RuntimeConfig(topology="check"))
    async with checking:
        with pytest.raises(ConfigError, match=r"exchange 'control'.* and \d+ more are missing"):
            await checking.declare(TOPOLOGY)
        applying = await Broker.connect(RuntimeConfig(amqp_url=checking.url))
        async with applying:
            await applying.declare(TOPOLOGY)
        await checking.declare(TOPOLOGY)  # now everything is there
        assert await checking.missing(TOPOLOGY) == []
