"""Worker heartbeats (issue 10): one WorkerHeartbeat per worker per interval, never per task,
read from the heartbeat stream by any number of watchers; a silent worker shows as lost."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from generated import models
from generated.topology import TOPOLOGY
from generated.worker import SEND_ROUTES, WorkerApp
from spectask.errors import SpectaskError
from spectask.protocol import document
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.workers import HEARTBEAT_STREAM, MISSED_BEATS, WorkerBoard, WorkerWatch
from tests.runtime_support import wait_consumed
from tests.status_support import new_id, producer_client

DEADLINE = 20.0


SEEN: set[str] = set()  # task ids the handlers ran (async handlers: on the test's loop)
RAN = asyncio.Event()


async def quick(payload: Any, context: TaskContext) -> dict[str, Any]:
    SEEN.add(context.task_id)
    RAN.set()
    return {"ok": True}


@asynccontextmanager
async def data_worker(url: str, worker_id: str, interval: float) -> AsyncIterator[None]:
    app = WorkerApp()
    app.process_data_statistics(quick)
    app.process_data_aggregate(quick)
    app.process_data_detect_patterns(quick)
    config = RuntimeConfig(amqp_url=url, heartbeat_interval=interval)
    broker = await Broker.connect(config, name=f"test-{worker_id}")
    await broker.declare(TOPOLOGY)  # so the waits below find the queues at once
    stop = asyncio.Event()
    runner = asyncio.create_task(
        app.run(broker, worker_id=worker_id, task_types=["data_analysis"], stop=stop)
    )
    try:
        await wait_consumed(url, ["tasks.data_analysis"])
        yield
    finally:
        stop.set()
        await runner
        await broker.close()


async def heard(watch: WorkerWatch, worker_id: str, ok: Any = None) -> models.WorkerHeartbeat:
    """Wait for a heartbeat of `worker_id` (that satisfies `ok`) to reach the watch."""
    async with asyncio.timeout(DEADLINE):
        while True:
            for view in watch.board.views():
                beat = view.heartbeat
                if beat.worker_id == worker_id and (ok is None or ok(beat)):
                    return beat
            watch.received.clear()
            await watch.received.wait()


def test_the_stream_name_is_the_protocols() -> None:
    import yaml

    doc = yaml.safe_load(document.shipped_bytes())
    queue = doc["channels"]["heartbeats"]["bindings"]["amqp"]["queue"]["name"]
    assert queue == HEARTBEAT_STREAM
    assert any(q.name == HEARTBEAT_STREAM for q in TOPOLOGY.queues)
    assert any(r.operation == "publishHeartbeat" for r in SEND_ROUTES)


async def test_a_worker_is_seen_with_its_counts_by_two_watchers(any_url: str) -> None:
    worker_id = new_id("hb")
    async with data_worker(any_url, worker_id, interval=0.2):
        watcher = await Broker.connect(RuntimeConfig(amqp_url=any_url), name="test-watch")
        first, second = WorkerWatch(watcher), WorkerWatch(watcher)
        await first.start()
        await second.start()
        try:
            beat = await heard(first, worker_id)
            assert beat.host == socket.gethostname()
            assert beat.pid == os.getpid()
            assert beat.task_types == ["data_analysis"]
            assert beat.concurrency == RuntimeConfig().concurrency
            client = await producer_client(watcher)
            for _ in range(3):
                await client.submit_data_statistics(models.DataStatistics(values=[1.0]))
            later = await heard(first, worker_id, lambda b: b.processed >= 3)
            assert later.failed == 0 and later.in_flight >= 0
            assert (await heard(second, worker_id)).worker_id == worker_id
        finally:
            await first.close()
            await second.close()
            await watcher.close()


async def test_one_heartbeat_per_period_not_per_task(any_url: str) -> None:
    """With an hour's interval, a worker that runs 40 tasks has sent exactly its first beat."""
    worker_id = new_id("hb")
    async with data_worker(any_url, worker_id, interval=3600):
        watcher = await Broker.connect(RuntimeConfig(amqp_url=any_url), name="test-watch")
        watch = WorkerWatch(watcher)
        await watch.start()
        try:
            await heard(watch, worker_id)
            client = await producer_client(watcher)
            ids = {
                await client.submit_data_statistics(models.DataStatistics(values=[1.0]))
                for _ in range(40)
            }
            async with asyncio.timeout(DEADLINE):
                while not ids <= SEEN:
                    RAN.clear()
                    await RAN.wait()
        finally:
            await watch.close()
            await watcher.close()
    # counted from the stream itself: a second reader from the start sees one beat of it
    checker = await Broker.connect(RuntimeConfig(amqp_url=any_url), name="test-check")
    recount = WorkerWatch(checker)
    beats: list[datetime] = []
    original = recount.board.add

    def counting(beat: models.WorkerHeartbeat) -> None:
        if beat.worker_id == worker_id:
            beats.append(beat.at)
        original(beat)

    recount.board.add = counting  # type: ignore[method-assign, assignment]
    await recount.start()
    try:
        await heard(recount, worker_id)
    finally:
        await recount.close()
        await checker.close()
    assert len(beats) == 1


def _beat(worker_id: str, at: datetime, interval: float = 5.0) -> models.WorkerHeartbeat:
    return models.WorkerHeartbeat(
        worker_id=worker_id,
        host="h",
        pid=1,
        task_types=["t"],
        concurrency=1,
        prefetch=1,
        in_flight=0,
        processed=0,
        failed=0,
        interval=interval,
        started_at=at,
        at=at,
    )


def test_a_worker_that_misses_three_beats_is_lost() -> None:
    board = WorkerBoard()
    now = datetime.now(UTC)
    board.add(_beat("alive", now - timedelta(seconds=MISSED_BEATS * 5 - 1)))
    board.add(_beat("gone", now - timedelta(seconds=MISSED_BEATS * 5 + 1)))
    board.add(_beat("gone", now - timedelta(seconds=60)))  # an older beat never wins
    states = {v.heartbeat.worker_id: v.to_json()["state"] for v in board.views(now)}
    assert states == {"alive": "online", "gone": "lost"}
    assert board.counts(now) == {"online": 1, "lost": 1}


@pytest.mark.memory
async def test_no_stream_is_a_clear_error() -> None:
    """On a broker no worker ever started on (a fresh in-memory hub), a one-line error."""
    broker = await Broker.in_memory()
    try:
        with pytest.raises(SpectaskError, match="no worker"):
            await WorkerWatch(broker).start()
    finally:
        await broker.close()
