"""Faults on a 3-node RabbitMQ cluster (issue 11), with the chaos suite's harness.

Every process (three workers, the collector, the producer) gets the three nodes' URLs
(`AMQP_URL=n1,n2,n3`, spectask.runtime.failover) and SPECTASK_QUEUE_TYPE=quorum, so the task
queues, results, dead letters, retry tiers and the collector's queues are replicated. The whole
batch is confirmed before the workers start, so all of it is in flight when the node leading
the task queue (found with `rabbitmqctl list_queues name leader`) is killed -9 or stopped:
`Batch.finish` (tests/chaos/batch.py) then fails a row on a lost task, a replaced result, an
unsettled message or a process that does not exit; here a row also fails when consumption took
5 s or more to resume (the *recovery* column: fault -> first stored result of a run that
finished after it) or when a worker did not reconnect to a surviving node. With 2 of 3 nodes
down, a submit must fail with a clear error instead of a false confirm.

CLUSTER_TASKS (default 5500: at least 5,000 still unrun at the fault) sets the batch size.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from generated.worker import PROCESS_DATA_STATISTICS
from spectask.devbroker import LocalNode
from spectask.devbroker.cluster import LocalCluster
from spectask.runtime.broker import redact_url
from spectask.runtime.config import RuntimeConfig
from tests.chaos.batch import Batch
from tests.chaos.processes import CHAOS_APP, ROOT
from tests.chaos.table import Row, render

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

TASKS = int(os.environ.get("CLUSTER_TASKS", "5500"))
IN_FLIGHT = min(5000, TASKS - TASKS // 20)  # what must still be unrun when the node goes
RESUME_WITHIN = 5.0
WORK_QUEUE = PROCESS_DATA_STATISTICS.queue
QUORUM = {"SPECTASK_QUEUE_TYPE": "quorum", "SPECTASK_QUORUM_WITHOUT_PRIORITIES": "true"}
ROWS: list[Row] = []


@pytest.fixture(scope="module", autouse=True)
def table(request: pytest.FixtureRequest) -> Iterator[list[Row]]:
    """Print the cluster rows once every fault has run (also when some failed)."""
    yield ROWS
    if not ROWS:
        return
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{render(ROWS)}\ncluster: {TASKS} tasks a batch, 3 nodes", flush=True)


@pytest.fixture
def cluster(rabbitmq_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The session's cluster, whole again after each test (stopped or killed nodes restarted)."""
    yield rabbitmq_cluster
    for node in rabbitmq_cluster.nodes:
        if not node.is_ready():
            node.start()
    deadline = time.monotonic() + 60
    while rabbitmq_cluster.running_members() != sorted(rabbitmq_cluster.nodenames()):
        assert time.monotonic() < deadline, "the cluster did not heal"
        time.sleep(1)


def leader_of(cluster: LocalCluster, queue: str) -> LocalNode:
    """The member leading quorum queue `queue`, as a running node reports it."""
    asker = next(node for node in cluster.nodes if node.is_running())
    done = asker.ctl("list_queues", "name", "leader", "--formatter", "json")
    leaders = {row["name"]: row["leader"] for row in json.loads(done.stdout)}
    return cluster.node_named(leaders[queue])


RECONNECTED = re.compile(r"reconnected to RabbitMQ at (\S+) after ([0-9.]+)s")


def resumed_after(
    batch: Batch, worker: str, log: str, survivors: list[str], fault_at: float
) -> float | None:
    """Seconds from the fault until `worker`, reconnected to a surviving node, started a task.

    The reconnect line says when (`after N s`, from the loss, which is the fault); the chaos
    app's execution log says when each run started. A run that started after the reconnect
    took a fresh delivery from the cluster: the deliveries of the lost channel cannot be
    settled any more, and a restarted handler would only have started before.
    """
    reconnects = [float(after) for url, after in RECONNECTED.findall(log) if url in survivors]
    if not reconnects:
        return None
    back = fault_at + reconnects[0]
    starts = sorted(
        float(fields[3])
        for line in batch.exec_log.read_text().splitlines()
        if len(fields := line.split()) == 5 and fields[1] == worker and float(fields[3]) > back
    )
    return starts[0] - fault_at if starts else None


def seconds_text(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}s"


def quorum_batch(cluster: LocalCluster, tmp_path: Path, name: str) -> Batch:
    config = RuntimeConfig(
        amqp_url=cluster.url, queue_type="quorum", quorum_without_priorities=True
    )
    store = f"sqlite:///{tmp_path / 'tasks.db'}"
    return Batch(cluster, tmp_path, name, store, TASKS, settings=QUORUM, config=config)


def node_fault(cluster: LocalCluster, tmp_path: Path, name: str, *, hard: bool) -> Row:
    """The whole batch confirmed, the workers started, then the task queue's leader goes."""
    batch = quorum_batch(cluster, tmp_path, name)
    try:
        batch.reset()
        batch.producer.start()
        assert batch.wait_produced() == 0, batch.producer.log()[-2000:]
        leader = leader_of(cluster, WORK_QUEUE)  # rabbitmqctl is slow on busy cores: ask first
        batch.start_services()
        batch.wait_executed(0.02)
        fault = f"{'kill -9' if hard else 'clean stop of'} the task queue's leader"
        at = batch.fault(fault).at
        unrun = TASKS - batch.executed()
        leader.kill() if hard else leader.stop()
        row = batch.finish(fault)
    finally:
        batch.close()
    ROWS.append(row)
    survivors = [redact_url(node.url) for node in cluster.nodes if node is not leader]
    resumed = {w.name: resumed_after(batch, w.name, w.log(), survivors, at) for w in batch.workers}
    first = min((s for s in resumed.values() if s is not None), default=None)
    shown = ", ".join(f"{name} {seconds_text(s)}" for name, s in resumed.items())
    print(
        f"\n{fault}: {unrun} confirmed tasks unrun at the fault; consumption resumed after "
        f"{seconds_text(first)} (per worker: {shown}); first result of a later run stored "
        f"after {seconds_text(row.recovery)} (the collector's backlog); lost {row.lost}, "
        f"duplicate results {row.duplicate_results}, duplicate executions "
        f"{row.duplicate_executions}"
    )
    for name, seconds in resumed.items():
        if seconds is None:
            row.failures.append(f"{name} never reconnected to a surviving node and ran a task")
    if first is None or first >= RESUME_WITHIN:
        row.failures.append(f"consumption resumed after {first}s (>= {RESUME_WITHIN}s)")
    if unrun < IN_FLIGHT:
        row.failures.append(f"only {unrun} tasks were in flight at the fault (< {IN_FLIGHT})")
    assert not row.failures, row.failures
    return row


def test_kill_9_of_the_task_queue_leader(cluster: LocalCluster, tmp_path: Path) -> None:
    node_fault(cluster, tmp_path, "leader-kill", hard=True)


def test_clean_stop_of_the_task_queue_leader(cluster: LocalCluster, tmp_path: Path) -> None:
    node_fault(cluster, tmp_path, "leader-stop", hard=False)


def test_submit_fails_clearly_with_two_of_three_nodes_down(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """No majority for the task queue: the broker confirms nothing, so the submit must fail
    within SPECTASK_CONFIRM_TIMEOUT, say why, and list the task as unconfirmed."""
    quorum_batch(cluster, tmp_path, "majority").reset()
    for node in cluster.nodes[1:]:
        node.stop()
    ids = tmp_path / "submitted.ids"
    env = {**os.environ, **QUORUM, "AMQP_URL": cluster.url, "SPECTASK_CONFIRM_TIMEOUT": "3"}
    command = [sys.executable, "-m", "spectask.cli", "produce", "--app", CHAOS_APP]
    command += ["--count", "1", "--ids-file", str(ids)]
    started = time.monotonic()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert "did not confirm message" in done.stderr, done.stderr
    assert "a majority of its nodes is down" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "0 of 1 tasks confirmed" in done.stderr, done.stderr
    assert not ids.exists() or ids.read_text().split() == [], ids.read_text()
    print(f"2 of 3 nodes down: the submit failed after {seconds:.1f}s: {done.stderr.strip()}")
