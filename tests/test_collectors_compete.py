"""Several `spectask collect` processes on ONE PostgreSQL store, competing on `results`.

Process level: the collectors are real `python -m spectask.cli collect` processes (so SIGKILL is
real), the results come from real worker processes plus messages published straight to the
`results` exchange, and the verdict is read from PostgreSQL itself and from the status RPC.

- Three collectors share 300 real results, 60 results published twice each (the two copies
  race into two collectors, so both try the first INSERT of the same id at once) and exact
  redeliveries of 30 results already stored: every id ends with one SUCCEEDED row holding its
  own result, a redelivery changes no column (not even `updated_at`), no collector has to
  requeue anything to get there, and every collector stored some of the results.
- A collector SIGKILLed while holding unacked results (their store writes are held back by a
  table lock the test takes) loses nothing: the broker requeues them and the survivor stores
  every one. A collector that acked before storing would lose them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

from generated import models
from generated.producer import ProducerClient
from generated.topology import TOPOLOGY
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.publisher import Publisher
from tests.status_support import publish_result_bodies
from tests.store_support import fresh_database
from tests.workqueue_support import (
    ROOT,
    ChildProcess,
    WorkerProcess,
    reset_topology,
    submit,
    wait_ready,
)

pytestmark = pytest.mark.timeout(120)

TYPE = "data_analysis.statistics"
REAL_TASKS = 300
RACED_IDS = 60  # each published twice, back to back
REDELIVERED = 30  # stored results published again, twice each
KILL_RESULTS = 100
KILL_PREFETCH = 16
# `spectask collect` prints one line per result it stored (first time that process saw the id).
STORED_LINE = re.compile(r"^succeeded\s+(\S+)\s", re.MULTILINE)


class CollectorProcess(ChildProcess):
    """`python -m spectask.cli collect` on the given store, its output in a log file."""

    def __init__(
        self, name: str, amqp_url: str, store_url: str, log_dir: Path, *, prefetch: int = 0
    ) -> None:
        env = {
            **os.environ,
            "AMQP_URL": amqp_url,
            "STORE_URL": store_url,
            "PYTHONUNBUFFERED": "1",
            "SPECTASK_SHUTDOWN_TIMEOUT": "20",
        }
        if prefetch:
            env["SPECTASK_PREFETCH"] = str(prefetch)
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spectask.cli", "collect"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stored(self) -> set[str]:
        """The ids this process printed as stored."""
        return set(STORED_LINE.findall(self.log()))

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while "consuming" not in self.log():
            assert self.process.poll() is None, f"{self.name} exited early:\n{self.log()}"
            assert time.monotonic() < deadline, (
                f"{self.name} not ready in {timeout}s:\n{self.log()}"
            )
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def collectors(
    count: int, amqp_url: str, store_url: str, log_dir: Path, *, prefetch: int = 0
) -> AsyncIterator[list[CollectorProcess]]:
    """`count` collectors started at once (they migrate the fresh store concurrently), ready."""
    started = [
        CollectorProcess(f"collector-{n}", amqp_url, store_url, log_dir, prefetch=prefetch)
        for n in range(1, count + 1)
    ]
    try:
        for process in started:
            await process.wait_ready()
        yield started
    finally:
        for process in started:
            process.stop()


async def queue_state(url: str, name: str) -> tuple[int, int]:
    """(ready messages, consumers) of a queue; unacked deliveries are not in the first."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        result = queue.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)


async def wait_queue(
    url: str, name: str, *, ready: int, consumers: int | None = None, timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = await queue_state(url, name)
        if state[0] == ready and consumers in (None, state[1]):
            return
        assert time.monotonic() < deadline, (
            f"{name}: (ready, consumers) stayed {state}; expected ({ready}, {consumers})"
        )
        await asyncio.sleep(0.05)


async def stored_rows(store_url: str, prefix: str) -> dict[str, DictRow]:
    """Every row of the tasks table whose id starts with `prefix`, read from PostgreSQL."""
    async with await psycopg.AsyncConnection.connect(store_url, row_factory=dict_row) as conn:
        cursor = await conn.execute(
            "SELECT * FROM tasks WHERE task_id LIKE %s ORDER BY task_id", (f"{prefix}%",)
        )
        found = await cursor.fetchall()
    by_id = {row["task_id"]: row for row in found}
    assert len(by_id) == len(found), "a task id has more than one row"
    return by_id


async def wait_succeeded(
    store_url: str, prefix: str, ids: Iterable[str], timeout: float
) -> dict[str, DictRow]:
    """Wait until every id has a succeeded row; fail saying what is missing or unfinished."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        rows = await stored_rows(store_url, prefix)
        missing = sorted(wanted - rows.keys())
        unfinished = sorted(i for i in wanted & rows.keys() if rows[i]["state"] != "succeeded")
        if not missing and not unfinished:
            return rows
        assert time.monotonic() < deadline, (
            f"after {timeout}s: {len(missing)} ids without a row (e.g. {missing[:3]}), "
            f"{len(unfinished)} not succeeded (e.g. {[rows[i]['state'] for i in unfinished[:3]]})"
        )
        await asyncio.sleep(0.2)


async def status_by_rpc(client: ProducerClient, ids: Sequence[str], chunk: int) -> dict[str, str]:
    """The states the status RPC reports, asked `chunk` ids at a time (so several collectors
    answer: the requests go round-robin to every collector consuming spectask.status)."""
    states: dict[str, str] = {}
    for start in range(0, len(ids), chunk):
        reply = await client.get_status(list(ids[start : start + chunk]), timeout=10.0)
        states.update({view.task_id: view.state.value for view in reply.tasks})
    return states


def result_body(task_id: str, *, worker_id: str, value: float) -> bytes:
    """A succeeded TaskResult as the worker would publish it."""
    now = datetime.now(UTC)
    document = models.TaskResult.model_validate(
        {
            "task_id": task_id,
            "message_type": TYPE,
            "status": "succeeded",
            "worker_id": worker_id,
            "attempt": 1,
            "submitted_at": now - timedelta(milliseconds=20),
            "started_at": now - timedelta(milliseconds=10),
            "finished_at": now,
            "result": {"value": value},
        }
    )
    return document.model_dump_json(exclude_none=True).encode()


def body_of_row(row: DictRow) -> bytes:
    """The stored result of a row as the TaskResult that produced it (an exact redelivery)."""
    document = models.TaskResult.model_validate(
        {
            "task_id": row["task_id"],
            "message_type": row["message_type"],
            "status": "succeeded",
            "worker_id": row["worker_id"],
            "attempt": row["attempts"],
            "submitted_at": row["submitted_at"],
            "started_at": row["started_at"],
            "finished_at": row["finished_at"],
            "result": row["result"],
        }
    )
    return document.model_dump_json(exclude_none=True).encode()


def producer_client(broker: Broker, publisher: Publisher) -> ProducerClient:
    return ProducerClient(TaskPublisher(publisher, TOPOLOGY), broker.rpc())


def requeue_lines(process: CollectorProcess) -> list[str]:
    """Lines saying the collector gave a delivery back or crashed (none expected)."""
    return [line for line in process.log().splitlines() if "requeue" in line or "Traceback" in line]


async def test_three_collectors_store_every_result_exactly_once(
    amqp_url: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    prefix = f"cc-{run}-"
    real = [f"{prefix}task-{n:04d}" for n in range(REAL_TASKS)]
    raced = [f"{prefix}raced-{n:03d}" for n in range(RACED_IDS)]
    every = real + raced
    tasks = [
        (task_id, TYPE, {"values": [n, n + 1, n + 2, n + 3]}) for n, task_id in enumerate(real)
    ]
    raced_bodies = {i: result_body(i, worker_id="direct", value=n) for n, i in enumerate(raced)}
    started = time.monotonic()
    with fresh_database("spectask_compete") as store_url:
        await reset_topology(amqp_url)
        async with collectors(3, amqp_url, store_url, tmp_path) as group:
            assert (await queue_state(amqp_url, "results"))[1] == 3
            workers = [
                WorkerProcess(
                    f"compete-{run}-w{n}",
                    amqp_url,
                    types="data_analysis",
                    prefetch=16,
                    concurrency=4,
                    log_dir=tmp_path,
                )
                for n in (1, 2)
            ]
            try:
                wait_ready(*workers)
                async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
                    client = producer_client(broker, await broker.publisher())
                    # the real results and the raced copies arrive in the queue interleaved
                    copies = [(i, raced_bodies[i]) for i in raced for _ in range(2)]
                    await asyncio.gather(
                        submit(amqp_url, tasks), publish_result_bodies(broker, copies)
                    )
                    rows = await wait_succeeded(store_url, prefix, every, timeout=45)
                    assert set(rows) == set(every)
                    for n, task_id in enumerate(real):
                        row = rows[task_id]
                        assert row["result"]["count"] == 4 and row["result"]["mean"] == n + 1.5
                        assert row["attempts"] == 1 and row["message_type"] == TYPE
                        assert row["worker_id"] in {w.worker_id for w in workers}
                    for n, task_id in enumerate(raced):
                        assert rows[task_id]["result"] == {"value": n}
                        assert rows[task_id]["worker_id"] == "direct"

                    states = await status_by_rpc(client, every, chunk=40)
                    assert states == dict.fromkeys(every, "SUCCEEDED")

                    # nothing left to apply: the rows are final; redeliver some stored results
                    await wait_queue(amqp_url, "collector.tasks", ready=0)
                    await wait_queue(amqp_url, "results", ready=0)
                    await asyncio.sleep(0.5)
                    before = await stored_rows(store_url, prefix)
                    again = [(i, body_of_row(before[i])) for i in real[::10][:REDELIVERED]]
                    await publish_result_bodies(broker, again + again)
                    await wait_queue(amqp_url, "results", ready=0)
            finally:
                for worker in workers:
                    worker.stop()
            for process in group:  # a clean stop finishes (and acks) every delivery it holds
                assert process.stop() == 0, process.log()
        assert await queue_state(amqp_url, "results") == (0, 0)
        after = await stored_rows(store_url, prefix)
        changed = {
            task_id: sorted(k for k in row if row[k] != after.get(task_id, {}).get(k))
            for task_id, row in before.items()
            if row != after.get(task_id)
        }
        assert not changed, f"redelivered results changed stored rows (columns): {changed}"

    stored = {process.name: process.stored() for process in group}
    summary = {name: len(ids) for name, ids in stored.items()}
    raced_by_two = [i for i in raced if sum(i in ids for ids in stored.values()) > 1]
    print(
        f"\n{len(every)} ids ({REAL_TASKS} real, {RACED_IDS} published twice, "
        f"{len(raced_by_two)} of those stored by two collectors), {REDELIVERED} redelivered "
        f"twice; {len(after)} rows; stored per collector: {summary}; "
        f"{time.monotonic() - started:.1f}s"
    )
    assert set().union(*stored.values()) == set(every)
    assert all(summary.values()), f"a collector stored nothing: {summary}"
    # both copies of a raced id were stored by two collectors at once (the insert race)
    assert raced_by_two, "no raced id reached two collectors"
    for process in group:
        assert requeue_lines(process) == [], process.name


async def test_a_killed_collectors_unacked_results_are_stored_by_the_survivor(
    amqp_url: str, tmp_path: Path
) -> None:
    prefix = f"ck-{uuid.uuid4().hex[:8]}-"
    ids = [f"{prefix}{n:03d}" for n in range(KILL_RESULTS)]
    bodies = [(i, result_body(i, worker_id="direct", value=n)) for n, i in enumerate(ids)]
    started = time.monotonic()
    with fresh_database("spectask_compete") as store_url:
        await reset_topology(amqp_url)
        async with (
            collectors(2, amqp_url, store_url, tmp_path, prefetch=KILL_PREFETCH) as group,
            await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker,
        ):
            victim, survivor = group
            await wait_queue(amqp_url, "results", ready=0, consumers=2)
            async with await psycopg.AsyncConnection.connect(store_url) as lock:
                # Store writes (SELECT ... FOR UPDATE) wait on this lock, plain reads do not.
                await lock.execute("LOCK TABLE tasks IN EXCLUSIVE MODE")
                await publish_result_bodies(broker, bodies)
                # each collector holds a full prefetch of results it cannot store yet
                await wait_queue(amqp_url, "results", ready=KILL_RESULTS - 2 * KILL_PREFETCH)
                victim.kill9()
                # the broker takes back the victim's unacked deliveries
                await wait_queue(
                    amqp_url, "results", ready=KILL_RESULTS - KILL_PREFETCH, consumers=1
                )
                await lock.rollback()
            rows = await wait_succeeded(store_url, prefix, ids, timeout=30)
            client = producer_client(broker, await broker.publisher())
            states = await status_by_rpc(client, ids, chunk=50)
            assert states == dict.fromkeys(ids, "SUCCEEDED")
            assert survivor.stop() == 0, survivor.log()
        assert await queue_state(amqp_url, "results") == (0, 0)
    assert {i: row["result"] for i, row in rows.items()} == {
        i: {"value": n} for n, i in enumerate(ids)
    }
    assert victim.stored() == set()
    assert survivor.stored() == set(ids)
    assert requeue_lines(survivor) == [], survivor.name
    print(
        f"\n{KILL_RESULTS} results, {KILL_PREFETCH} unacked in the killed collector; "
        f"survivor stored {len(survivor.stored())}; {len(rows)} rows; "
        f"{time.monotonic() - started:.1f}s"
    )
