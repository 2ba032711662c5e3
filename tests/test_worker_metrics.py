"""A worker's own /metrics (SPECTASK_METRICS_PORT): counters move with the work (issue 10)."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from typing import Any

import pytest

from generated import models
from generated.topology import TOPOLOGY
from generated.worker import WorkerApp
from spectask.errors import ConfigError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
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


async def test_worker_metrics_move_with_the_work(amqp_url: str) -> None:
    port = free_port()
    config = RuntimeConfig(amqp_url=amqp_url, metrics_port=port)
    broker = await Broker.connect(config, name="test-metrics")
    await broker.declare(TOPOLOGY)
    stop = asyncio.Event()
    runner = asyncio.create_task(
        app().run(broker, worker_id="w-metrics", task_types=["data_analysis"], stop=stop)
    )
    try:
        await wait_consumed(amqp_url, ["tasks.data_analysis"])
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
    finally:
        stop.set()
        await runner
        await broker.close()
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
