"""Least privilege: a virtual host for the application and a user per role (README, Running in
production), each with the narrowest configure/write/read regexes that still let it work.

The operator applies the topology; then a worker, a collector and a producer run with
SPECTASK_TOPOLOGY=check and no configure permission at all: the producer submits, waits for
the results through the status RPC (direct reply-to needs no permission of its own) and asks
for a task's status. Each regex is also shown to be narrow: a role cannot do the others' work.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import aiormq
import pytest

from generated.topology import TOPOLOGY
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from tests.cli_support import spectask
from tests.process_support import Command
from tests.secure_support import ManagementNode, management_node

pytestmark = pytest.mark.timeout(240)

NOTHING = "^$"
# (configure, write, read) per role: the README's table (tests/test_permissions.py checks it)
ROLES = {
    "operator": (".*", ".*", ".*"),
    "producer": (NOTHING, "^(tasks|rpc|control)$", NOTHING),
    "worker": (
        NOTHING,
        r"^(results|events|dead_letter|workers|retry\..*|amq\.default)$",
        r"^(tasks\..*|spectask\.cancellations)$",
    ),
    "collector": (
        NOTHING,
        r"^(dead_letter|amq\.default)$",
        r"^(results|collector\..*|spectask\.status)$",
    ),
    "dashboard": (NOTHING, "^(tasks|rpc|control)$", r"^spectask\.heartbeats$"),
}


@pytest.fixture(scope="module")
def node() -> Iterator[ManagementNode]:
    yield from management_node("spectask-permissions")


@pytest.fixture(scope="module")
def urls(node: ManagementNode) -> dict[str, str]:
    """A fresh application vhost with one user per role; guest has no permission there."""
    vhost = f"app-{uuid.uuid4().hex[:8]}"
    node.add_vhost(vhost)
    node.api("DELETE", f"permissions/{vhost}/guest")
    return {role: node.add_user(vhost, f"{role}-{vhost}", *rules) for role, rules in ROLES.items()}


def env_for(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "AMQP_URL": url,
        "SPECTASK_TOPOLOGY": "check",
        "SPECTASK_MANAGEMENT_URL": "http://127.0.0.1:1",  # views: passive, as a role sees it
        "STORE_URL": f"sqlite:///{tmp_path / 'tasks.db'}",
        **extra,
    }


def test_the_roles_run_the_system_with_least_privilege(
    urls: dict[str, str], tmp_path: Path
) -> None:
    # a producer in declare mode (the dev default) is told what to do instead of ACCESS_REFUSED
    refused = spectask(env_for(urls["producer"], tmp_path, SPECTASK_TOPOLOGY="declare"), "produce")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "may not declare exchange 'control'" in line and "SPECTASK_TOPOLOGY=check" in line
    # nor may it declare in check mode before the operator has applied the topology
    early = spectask(env_for(urls["producer"], tmp_path), "produce", "--count", "1")
    assert early.returncode == 1 and "spectask topology apply" in early.stderr, early.stderr

    applied = spectask(env_for(urls["operator"], tmp_path), "topology", "apply")
    assert applied.returncode == 0, applied.stderr
    checked = spectask(env_for(urls["producer"], tmp_path), "topology", "check")
    assert checked.returncode == 0, checked  # passive declares need no permission either

    worker = Command(tmp_path, "worker", "worker", "w1", env=env_for(urls["worker"], tmp_path))
    collector = Command(tmp_path, "collector", "collect", env=env_for(urls["collector"], tmp_path))
    try:
        run_batch(urls, tmp_path, worker, collector)
    finally:
        worker.close()
        collector.close()


def run_batch(urls: dict[str, str], tmp_path: Path, worker: Command, collector: Command) -> None:
    """The producer's batch, with --wait (status RPC), then one `spectask status`."""
    worker.wait_for("consuming")
    collector.wait_for("consuming")

    ids = tmp_path / "ids.txt"
    producer_env = env_for(urls["producer"], tmp_path)
    args = ("--count", "6", "--types", "data_analysis", "--ids-file", str(ids), "--wait")
    produced = spectask(producer_env, "produce", *args, "--wait-timeout", "60")
    assert produced.returncode == 0, produced.stdout + produced.stderr
    first = ids.read_text().split()[0]
    status = spectask(producer_env, "status", first)
    assert status.returncode == 0, status.stderr
    assert f"{first}  SUCCEEDED" in status.stdout, status.stdout
    for command in (worker, collector):
        assert "ACCESS_REFUSED" not in command.output(), command.output()


async def refused_to(url: str, action: str) -> str:
    """Try `action` as the user of `url`; the broker's refusal text (the test fails if none)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        try:
            if action == "consume tasks":
                await (await channel.get_queue("tasks.data_analysis")).get(fail=False)
            elif action == "publish tasks":
                exchange = await channel.get_exchange("tasks")
                await exchange.publish(aio_pika.Message(b"{}"), routing_key="data_analysis.x")
                await channel.close()  # the refusal closes the channel asynchronously
            elif action == "declare":
                await channel.declare_queue("not-in-the-spec", durable=True)
            else:
                raise AssertionError(action)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            return str(exc)
        except aiormq.exceptions.ChannelInvalidStateError:
            return "ACCESS_REFUSED (channel closed)"
    raise AssertionError(f"{action} was allowed")


@pytest.mark.parametrize(
    ("role", "action"),
    [
        ("producer", "consume tasks"),
        ("producer", "declare"),
        ("worker", "publish tasks"),
        ("worker", "declare"),
        ("collector", "consume tasks"),
        ("dashboard", "consume tasks"),
    ],
)
async def test_a_role_cannot_do_what_it_does_not_need(
    urls: dict[str, str], role: str, action: str
) -> None:
    assert "ACCESS_REFUSED" in await refused_to(urls[role], action)


def test_the_readme_table_is_the_tested_one() -> None:
    """README's "Running in production" table says exactly what this module grants."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = {}
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.replace(r"\|", "\0").strip("|").split("|")]
        if len(cells) == 4 and cells[0].split(" ")[0] in ROLES:
            rules = tuple(cell.strip("`").replace("\0", "|") for cell in cells[1:])
            table[cells[0].split(" ")[0]] = rules
    assert table == ROLES


@pytest.mark.parametrize(
    ("role", "exchange"),
    [("worker", "retry.1000ms"), ("worker", "dead_letter"), ("collector", "dead_letter")],
)
async def test_a_role_may_publish_where_its_failures_go(
    urls: dict[str, str], role: str, exchange: str
) -> None:
    """Paths the batch above does not take (a retry, a dead letter): confirmed, not refused."""
    operator = await Broker.connect(RuntimeConfig(amqp_url=urls["operator"]))
    async with operator:
        await operator.declare(TOPOLOGY)  # idempotent; in case this test runs alone
    connection = await aio_pika.connect(urls[role])
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        await target.publish(aio_pika.Message(b"{}"), routing_key="permissions.probe")
