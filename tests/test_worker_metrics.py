"""A worker's own /metrics (SPECTASK_METRICS_PORT): counters move with the work (issue 10)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest

from generated import models
from generated.topology import TOPOLOGY
from generated.worker import WorkerApp
from spectask.errors import ConfigError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.metrics import HEALTH_PATH, LIVENESS_TIMEOUT
from tests.dashboard_support import free_port
from tests.runtime_support import wait_consumed
from tests.status_support import producer_client
from tests.test_dashboard_http import metric

RAN = asyncio.Event()
SEEN: set[str] = set()


async def quick(payload: Any, context: TaskContext) -> dict[str, Any]:
    SEEN.add(context.task_id)
    RAN.set()
    return {"ok": True}


def app() -> WorkerApp:
    worker = WorkerApp()
    worker.process_data_statistics(quick)
    worker.process_data_aggregate(quick)
    worker.process_data_detect_patterns(quick)
    return worker


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


@contextlib.asynccontextmanager
async def metrics_worker(amqp_url: str, worker_id: str) -> AsyncIterator[tuple[int, Broker]]:
    """A data_analysis worker serving its metrics port, consuming: (port, its broker)."""
    port = free_port()
    config = RuntimeConfig(amqp_url=amqp_url, metrics_port=port)
    broker = await Broker.connect(config, name=f"test-{worker_id}")
    await broker.declare(TOPOLOGY)
    stop = asyncio.Event()
    runner = asyncio.create_task(
        app().run(broker, worker_id=worker_id, task_types=["data_analysis"], stop=stop)
    )
    try:
        await wait_consumed(amqp_url, ["tasks.data_analysis"])
        yield port, broker
    finally:
        stop.set()
        await runner
        await broker.close()


async def test_worker_metrics_move_with_the_work(amqp_url: str) -> None:
    async with metrics_worker(amqp_url, "w-metrics") as (port, broker):
        config = broker.config
        before = await asyncio.to_thread(scrape, port)
        labels = {"worker_id": "w-metrics", "task_type": "data_analysis"}
        assert metric(before, "spectask_worker_prefetch", worker_id="w-metrics") == config.prefetch
        start = metric(before, "spectask_worker_processed_total", **labels)
        client = await producer_client(broker)
        ids = {
            await client.submit_data_statistics(models.DataStatistics(values=[1.0]))
            for _ in range(5)
        }
        async with asyncio.timeout(20):
            while not ids <= SEEN:
                RAN.clear()
                await RAN.wait()
        async with asyncio.timeout(20):
            while True:  # the counter is bumped when the result is confirmed, just after
                after = await asyncio.to_thread(scrape, port)
                if metric(after, "spectask_worker_processed_total", **labels) >= start + 5:
                    break
        outcome = metric(after, "spectask_worker_outcomes_total", outcome="succeeded")
        assert outcome >= 5
        # each attempt's duration, per message type, in the histogram
        histogram = {**labels, "operation": "statistics"}
        name = "spectask_worker_handler_duration_seconds"
        assert metric(after, f"{name}_count", **histogram) >= 5
        assert metric(after, f"{name}_bucket", **histogram, le="+Inf") >= 5
        assert 0 < metric(after, f"{name}_sum", **histogram) < 5 * 10
    with pytest.raises(OSError):  # the port is released at stop
        await asyncio.to_thread(scrape, port)


async def test_a_taken_port_is_a_one_line_error(amqp_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = await Broker.connect(RuntimeConfig(amqp_url=amqp_url, metrics_port=port))
        try:
            with pytest.raises(ConfigError, match="cannot serve /metrics"):
                await app().run(broker, worker_id="w-taken", task_types=["data_analysis"])
        finally:
            await broker.close()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_healthz_answers_only_while_the_event_loop_runs(amqp_url: str) -> None:
    """Liveness: the server's thread would answer /metrics from a stuck loop; /healthz not."""
    async with metrics_worker(amqp_url, "w-healthz") as (port, _):
        assert await asyncio.to_thread(get, port, HEALTH_PATH) == (200, "ok\n")
        answer: list[tuple[int, str]] = []
        probe = threading.Thread(target=lambda: answer.append(get(port, HEALTH_PATH)))
        probe.start()
        time.sleep(LIVENESS_TIMEOUT + 1.5)  # noqa: ASYNC251 - the stuck loop under test
        probe.join(timeout=10)
        status, body = answer[0]
        assert status == 503, body
        assert body == f"worker w-healthz: event loop did not answer in {LIVENESS_TIMEOUT}s\n"
        assert await asyncio.to_thread(get, port, HEALTH_PATH) == (200, "ok\n")
        metrics_status, _ = await asyncio.to_thread(get, port, "/metrics")
        assert metrics_status == 200
