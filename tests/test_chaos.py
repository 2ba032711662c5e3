"""The chaos suite (issue 9): each fault during a live batch, on a throwaway RabbitMQ node.

Real processes throughout: three `spectask worker` processes (tests/chaos/app.py: the real
data_analysis handlers, each run logged), a `spectask collect` on SQLite or PostgreSQL, and
`spectask produce` submitting the batch. Every test injects its fault while handlers are
busy, then `Batch.finish` drains, stops everything and judges the row (tests/chaos/batch.py
says how each column is measured). A row fails when a confirmed task is lost, a stored
result is replaced or moves backwards, a message stays unsettled, or a process does not exit
within its shutdown timeout; duplicate executions are printed, not failed. The table is
printed at the end of the module: `make chaos` runs this module alone, `make test` with the rest.

CHAOS_TASKS (default 2000) sets the batch size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from generated.worker import PROCESS_DATA_STATISTICS
from spectask.commands.dlq import spec_queue
from spectask.devbroker import LocalNode
from tests.brokers import require_rabbitmq_installed, throwaway_node
from tests.chaos.batch import MAX_MESSAGE_BYTES, Batch
from tests.chaos.observe import executions
from tests.chaos.poison import ID_PREFIX, publish, storm, take_dead_letters
from tests.chaos.processes import REAL_APP, stop_all
from tests.chaos.proxy import TcpProxy
from tests.chaos.table import Row, render
from tests.store_support import fresh_database
from tests.workqueue_support import queue_depth, reset_topology

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

TASKS = int(os.environ.get("CHAOS_TASKS", "2000"))
POISON = TASKS // 4
WORK_QUEUE = PROCESS_DATA_STATISTICS.queue
DEAD_LETTER, _ = spec_queue(REAL_APP)  # the queue `spectask dlq` reads
ROWS: list[Row] = []


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    """A node of the module's own: these tests stop and kill it."""
    require_rabbitmq_installed()
    yield from throwaway_node("spectask-chaos")


@pytest.fixture(scope="module", autouse=True)
def table(request: pytest.FixtureRequest) -> Iterator[list[Row]]:
    """Print the table once every fault has run (also when some failed)."""
    started = time.monotonic()
    yield ROWS
    if not ROWS:
        return
    footer = f"chaos: {len(ROWS)} rows, {TASKS} tasks a batch, {time.monotonic() - started:.0f}s"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{render(ROWS)}\n{footer}", flush=True)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


def judged(
    batch: Batch,
    fault: str,
    *,
    producer_ok: bool = True,
    settle: Callable[[set[str]], list[str]] | None = None,
) -> Row:
    """Finish the batch (`Batch.finish`'s checks), add its row to the table, fail on a bad row."""
    try:
        row = batch.finish(fault, producer_ok=producer_ok, settle=settle)
    finally:
        batch.close()
    ROWS.append(row)
    assert not row.failures, row.failures
    return row


def test_worker_kill_9_repeated(node: LocalNode, tmp_path: Path) -> None:
    batch = Batch(node, tmp_path, "kill9", sqlite_url(tmp_path), TASKS).start()
    for index, fraction in enumerate((0.1, 0.25, 0.4, 0.55, 0.7)):
        batch.wait_executed(fraction)
        worker = batch.workers[index % len(batch.workers)]
        batch.kill9(worker)
        worker.start()
    judged(batch, "worker kill -9 (5 times, restarted)")


def test_worker_sigstop_then_sigcont(node: LocalNode, tmp_path: Path) -> None:
    batch = Batch(node, tmp_path, "sigstop", sqlite_url(tmp_path), TASKS).start()
    batch.wait_executed(0.25)
    frozen = batch.workers[0]
    batch.fault("SIGSTOP w1")
    frozen.signal(signal.SIGSTOP)
    time.sleep(5)
    frozen.signal(signal.SIGCONT)
    judged(batch, "worker SIGSTOP 5 s, SIGCONT")


@pytest.mark.parametrize("hard", [False, True], ids=["stop", "kill-9"])
def test_broker_down_and_back(node: LocalNode, tmp_path: Path, hard: bool) -> None:
    """Once the batch is on the broker: a clean stop (or a kill -9), then a start."""
    name, fault = ("brokerkill", "broker kill -9") if hard else ("brokerstop", "broker stop")
    batch = Batch(node, tmp_path, name, sqlite_url(tmp_path), TASKS).start()
    batch.wait_produced()
    batch.wait_executed(0.4)
    batch.fault(fault)
    if hard:
        node.kill()
    else:
        node.stop()
    node.start()
    judged(batch, f"{fault}, restarted")


def test_connections_cut_by_a_proxy(node: LocalNode, tmp_path: Path) -> None:
    proxy = TcpProxy(node.amqp_port).start()
    try:
        batch = Batch(node, tmp_path, "cut", sqlite_url(tmp_path), TASKS, proxy=proxy).start()
        batch.wait_executed(0.3)
        batch.fault("connections cut")
        cut = proxy.cut(hold=3.0)
        assert cut >= 2 * 4, f"only {cut} sockets went through the proxy"
        judged(batch, "connections cut (proxy, 3 s outage)")
    finally:
        proxy.close()


def test_sigterm_of_every_worker(node: LocalNode, tmp_path: Path) -> None:
    batch = Batch(node, tmp_path, "sigterm", sqlite_url(tmp_path), TASKS).start()
    batch.wait_executed(0.3)
    batch.fault("SIGTERM every worker")
    batch.exits.extend(stop_all(batch.workers))
    for worker in batch.workers:
        worker.start()
    judged(batch, "SIGTERM every worker, restarted")


def collector_kill(node: LocalNode, tmp_path: Path, store_url: str, name: str) -> Batch:
    batch = Batch(node, tmp_path, name, store_url, TASKS).start()
    deadline = time.monotonic() + 120
    while len(batch.tail.seen) < TASKS * 0.3:
        assert time.monotonic() < deadline, "the collector stored too little"
        time.sleep(0.02)
    batch.kill9(batch.collector)
    time.sleep(1.0)
    batch.collector.start()
    return batch


def test_collector_kill_9_on_sqlite(node: LocalNode, tmp_path: Path) -> None:
    batch = collector_kill(node, tmp_path, sqlite_url(tmp_path), "collector-sqlite")
    judged(batch, "collector kill -9 (SQLite), restarted")


def test_collector_kill_9_on_postgresql(node: LocalNode, tmp_path: Path) -> None:
    with fresh_database("spectask_chaos") as url:
        batch = collector_kill(node, tmp_path, url, "collector-postgres")
        judged(batch, "collector kill -9 (PostgreSQL), restarted")


def test_poison_storm_among_valid_tasks(node: LocalNode, tmp_path: Path) -> None:
    """Malformed messages from a plain AMQP client while a valid batch runs: every one is a
    dead letter with its reason (the handler never runs for one), every valid task runs."""
    batch = Batch(node, tmp_path, "poison", sqlite_url(tmp_path), TASKS).start()
    poison = storm(POISON, MAX_MESSAGE_BYTES)
    batch.wait_executed(0.05)
    failed: list[BaseException] = []

    def send() -> None:
        try:
            publish(node.url, poison, pace=0.2)
        except BaseException as exc:  # reported by the test, not lost in the thread
            failed.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    sender.join(120)
    assert not sender.is_alive(), "the poison publisher hung"
    if failed:
        batch.close()
        raise failed[0]
    with_ids = {p.task_id for p in poison if p.task_id is not None}
    without_ids = sum(1 for p in poison if p.task_id is None)

    def settle(confirmed: set[str]) -> list[str]:
        letters = asyncio.run(
            take_dead_letters(node.url, DEAD_LETTER, WORK_QUEUE, len(poison), timeout=120)
        )
        (batch.dir / "dead_letters.txt").write_text(
            "".join(f"{d.task_id} {d.origin_queue} {d.reason} {d.error}\n" for d in letters)
        )
        workers = [d for d in letters if d.origin_queue == WORK_QUEUE]
        ids = Counter(d.task_id for d in workers)
        problems = []
        missing = with_ids - ids.keys()
        if missing:
            problems.append(f"{len(missing)} poison not dead-lettered, e.g. {sorted(missing)[:3]}")
        idless = [d for d in workers if not (d.task_id or "").startswith(ID_PREFIX)]
        if len(idless) != without_ids:
            problems.append(f"{len(idless)} id-less dead letters for {without_ids} sent")
        if valid := confirmed & ids.keys():
            problems.append(f"valid tasks dead-lettered: {sorted(valid)[:3]}")
        if unexplained := [d for d in letters if not d.reason or not d.error]:
            problems.append(f"dead letters without a reason: {unexplained[:2]}")
        if ran := with_ids & executions(batch.exec_log).keys():
            problems.append(f"handlers ran for poison: {sorted(ran)[:3]}")
        return problems

    judged(batch, f"poison storm ({len(poison)} among the valid tasks)", settle=settle)


def test_a_broker_killed_during_submit_leaves_track_of_what_it_confirmed(
    node: LocalNode, tmp_path: Path
) -> None:
    """Issue 9 item 10: kill -9 the broker during a 3,000-task submit. The producer writes the
    confirmed ids to --ids-file and the rest to `.unconfirmed`, says "N of M tasks confirmed",
    exits non-zero; after the restart every confirmed id ends SUCCEEDED."""
    total = 3000
    batch = Batch(node, tmp_path, "submitkill", sqlite_url(tmp_path), total)
    asyncio.run(reset_topology(node.url))
    batch.producer.start()
    deadline = time.monotonic() + 60
    while asyncio.run(queue_depth(node.url, WORK_QUEUE)) < 300:
        assert batch.producer.running(), batch.producer.log()
        assert time.monotonic() < deadline, "no task reached the broker"
        time.sleep(0.05)
    batch.fault("broker kill -9 during submit")
    node.kill()
    try:
        code = batch.wait_produced(timeout=60)
    except subprocess.TimeoutExpired:
        batch.close()
        raise AssertionError("the producer hung after the broker died") from None
    log = batch.producer.log()
    confirmed = batch.ids_file.read_text().split()
    unconfirmed = Path(f"{batch.ids_file}.unconfirmed").read_text().split()
    node.start()
    batch.start_services()
    row = judged(batch, f"broker kill -9 during a {total}-task submit", producer_ok=False)
    assert code not in (0, None), log
    assert "Traceback" not in log and "never retrieved" not in log, log
    assert f"{len(confirmed)} of {total} tasks confirmed by the broker" in log, log
    assert 300 <= len(confirmed) < total, log
    assert len(set(confirmed) | set(unconfirmed)) == len(confirmed) + len(unconfirmed) == total
    assert row.succeeded == len(confirmed)
