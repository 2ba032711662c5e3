"""`spectask queues`, `spectask tasks` and `spectask workers` as a user runs them (issue 10)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from spectask.runtime.producer import batch_task_ids
from spectask.store import TaskState, open_store
from spectask.store.batches import list_tasks
from spectask.store.observations import EventKind, Observation
from tests.cli_support import spectask
from tests.workqueue_support import WorkerProcess, reset_topology, submit, wait_ready

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(180)


async def test_queues_shows_each_spec_queue_and_its_source(amqp_url: str) -> None:
    await reset_topology(amqp_url)
    await submit(
        amqp_url,
        [(f"q-{n}", "data_analysis.statistics", {"values": [1.0]}) for n in range(3)],
    )
    env = {**os.environ, "AMQP_URL": amqp_url, "SPECTASK_MANAGEMENT_URL": "http://127.0.0.1:9"}
    done = spectask(env, "queues", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source"] == "passive"  # nothing listens on port 9: the API is down
    assert "management API not reachable" in report["note"]
    by_name = {q["name"]: q for q in report["queues"]}
    assert by_name["tasks.data_analysis"]["ready"] == 3
    assert by_name["tasks.data_analysis"]["consumers"] == 0
    assert by_name["tasks.data_analysis"]["unacked"] is None  # passive cannot tell
    assert by_name["spectask.heartbeats"]["kind"] == "stream"
    table = spectask(env, "queues")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("source: passive")
    assert any(
        line.split()[:3] == ["tasks.data_analysis", "queue", "3"]
        for line in table.stdout.splitlines()
    )


async def test_tasks_lists_by_batch_state_and_type(store_url: str) -> None:
    store = await open_store(store_url)
    now = datetime.now(UTC)
    batch = f"b{uuid.uuid4().hex[:6]}"
    # two runs of the label (produce --batch B twice): one batch, as the dashboard lists it
    ours = batch_task_ids(batch, 3) + batch_task_ids(batch, 2)
    try:
        for task_id in ours:
            await store.apply(Observation(task_id, EventKind.SUBMITTED, now, message_type="a.x"))
        await store.apply(Observation("other-1", EventKind.SUBMITTED, now, message_type="b.y"))
        # not ours though their ids start `B-`: batch `B-x`, and a hand-made id of no batch
        for task_id in (*batch_task_ids(f"{batch}-x", 2), f"{batch}-000009"):
            await store.apply(Observation(task_id, EventKind.SUBMITTED, now, message_type="a.x"))
        # a batch whose name is a prefix of ours' letters, and LIKE wildcards: not ours
        await store.apply(Observation(f"{batch}x-1", EventKind.SUBMITTED, now, message_type="a.x"))
        await store.apply(Observation("%_-1", EventKind.SUBMITTED, now, message_type="a.x"))
        await store.apply(
            Observation(ours[1], EventKind.SUCCEEDED, now, message_type="a.x", result={"ok": 1})
        )
        by_store = await list_tasks(store, batch=batch, limit=100)
    finally:
        await store.close()
    env = {**os.environ, "STORE_URL": store_url}

    def ids(*args: str) -> list[str]:
        done = spectask(env, "tasks", "--json", *args)
        assert done.returncode == 0, done.stderr
        return [task["task_id"] for task in json.loads(done.stdout)]

    assert sorted(ids("--batch", batch)) == sorted(ours)
    assert ids("--batch", batch) == [record.task_id for record in by_store]  # one query
    assert ids("--batch", batch, "--state", "succeeded") == [ours[1]]
    run = ours[0][: -len("000000")]
    assert sorted(ids("--batch", batch, "--id", run)) == ours[:3]  # one run of the batch
    assert sorted(ids("--batch", batch, "--id", batch[:3])) == sorted(ours)  # start of `B-`
    assert ids("--batch", batch, "--id", "other") == []
    assert ids("--type", "b.y") == ["other-1"]
    assert ids("--id", "%_") == ["%_-1"]
    assert ids("--id", batch.upper()) == []  # ids are case-sensitive
    assert len(ids("--batch", batch, "--limit", "2")) == 2
    assert ids("--id", "nothing-like-it") == []
    table = spectask(env, "tasks", "--batch", batch, "--state", "succeeded")
    assert table.returncode == 0, table.stderr
    assert "succeeded" in table.stdout.lower() and ours[1] in table.stdout
    bad = spectask(env, "tasks", "--limit", "0")
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: --limit")
    assert "Traceback" not in bad.stderr
    wrong = spectask(env, "tasks", "--state", "sleeping")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


async def test_tasks_recount_counts_rows_written_past_the_store(store_url: str) -> None:
    kind = f"bulk.{uuid.uuid4().hex[:6]}"
    await (await open_store(store_url)).close()  # the schema
    at = datetime.now(UTC).isoformat()
    rows = [(f"{kind}-{n}", kind, "failed", 1, at) for n in range(7)]
    insert_rows(store_url, rows)
    store = await open_store(store_url)
    try:
        assert kind not in await store.counts_by_type()  # a bulk load skips the counts
        done = spectask({**os.environ, "STORE_URL": store_url}, "tasks", "--recount")
        assert done.returncode == 0, done.stderr
        line = next(line for line in done.stdout.splitlines() if line.startswith(kind))
        assert line.split()[1:] == ["0", "0", "0", "0", "7", "0", "0"], done.stdout
        assert (await store.counts_by_type())[kind][TaskState.FAILED] == 7
    finally:
        await store.close()


def insert_rows(store_url: str, rows: Sequence[tuple[object, ...]]) -> None:
    """Rows written past the store (a bulk load), with the plain driver."""
    statement = (
        "INSERT INTO tasks (task_id, message_type, state, attempts, updated_at) "
        "VALUES (?, ?, ?, ?, ?)"
    )
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            conn.executemany(statement, rows)
        return
    with psycopg.connect(store_url) as pg, pg.cursor() as cursor:
        cursor.executemany(statement.replace("?", "%s"), rows)


async def test_workers_shows_a_live_worker_then_lost(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await reset_topology(amqp_url)
    monkeypatch.setenv("SPECTASK_HEARTBEAT_INTERVAL", "0.5")
    worker_id = f"wv-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(worker_id, amqp_url, types="data_analysis", log_dir=tmp_path)
    env = {**os.environ, "AMQP_URL": amqp_url}
    try:
        wait_ready(worker)

        def state() -> dict[str, object] | None:
            done = spectask(env, "workers", "--json")
            assert done.returncode == 0, done.stderr
            return next((w for w in json.loads(done.stdout) if w["worker_id"] == worker_id), None)

        seen = state()
        assert seen is not None and seen["state"] == "online"
        assert seen["pid"] == worker.process.pid
        assert seen["task_types"] == ["data_analysis"]
        table = spectask(env, "workers")
        assert worker_id in table.stdout and "online" in table.stdout
        worker.kill9()
        deadline = time.monotonic() + 30
        while (seen := state()) is not None and seen["state"] != "lost":
            assert time.monotonic() < deadline, f"never shown lost: {seen}"
        assert seen is not None and seen["state"] == "lost"
    finally:
        worker.stop()
