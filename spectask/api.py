"""The public API a user's own script needs: connect, a producer client, a worker, a collector.

Everything here is what the `spectask` commands do, as functions, so a script of one's own
never reaches into internal modules. Each takes the `Application` (or the `--app` string that
names one) and sets up logging the way the commands do, unless the script configured it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection
from typing import Any

from spectask.app import Application, load_app
from spectask.errors import ConfigError
from spectask.logs import configure_logging
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.consumer import WorkerStats
from spectask.signals import stop_on_signals


def _application(app: Application | str) -> Application:
    return load_app(app) if isinstance(app, str) else app


def _config(url: str | None) -> RuntimeConfig:
    return RuntimeConfig(amqp_url=url) if url else RuntimeConfig()


async def connect(url: str | None = None, *, name: str = "spectask") -> Broker:
    """A robust connection to RabbitMQ (`AMQP_URL` unless `url` is given); use `async with`."""
    return await Broker.connect(_config(url), name=name)


async def producer(broker: Broker, app: Application | str) -> Any:
    """The application's generated `ProducerClient`, its topology declared: one line to submit.

    `client = await spectask.producer(broker, app)`; then `await client.submit_<op>(model)`,
    `await client.get_status(ids)`, `await client.wait(ids, timeout)`.
    """
    return await _application(app).module("producer").ProducerClient.open(broker)


async def run_worker(
    app: Application | str,
    worker_id: str,
    *,
    task_types: Collection[str] | None = None,
    burst: bool = False,
    url: str | None = None,
    stop: asyncio.Event | None = None,
) -> WorkerStats:
    """Run the application's worker until SIGTERM/SIGINT (or, with `burst`, until idle)."""
    configure_logging()
    application = _application(app)
    if application.worker is None:
        raise ConfigError("the application has no worker; build it with Application(worker=...)")
    stop = stop or asyncio.Event()
    config = _config(url)
    who = f"worker {worker_id}"
    stop_on_signals(stop, who, timeout=config.shutdown_timeout)
    async with await Broker.connect(
        config, name=f"spectask-worker-{worker_id}", stop=stop
    ) as broker:
        stats: WorkerStats = await application.worker.run(
            broker, worker_id=worker_id, task_types=task_types, stop=stop, burst=burst
        )
        return stats


async def run_collector(
    app: Application | str, *, url: str | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run a collector: results, task copies, dead letters and events into the task store
    (`STORE_URL`), status requests answered from it; until SIGTERM/SIGINT or `stop`."""
    from spectask.collector import add_store_handlers, store_result
    from spectask.store import open_store

    configure_logging()
    application = _application(app)
    collector = application.module("collector").CollectorApp()
    store = await open_store()
    add_store_handlers(collector, store)
    collector.collect_result(store_result(store))
    stop = stop or asyncio.Event()
    config = _config(url)
    who = f"collector {os.getpid()}"
    stop_on_signals(stop, who, timeout=config.shutdown_timeout)
    try:
        async with await Broker.connect(config, name="spectask-collector", stop=stop) as broker:
            await collector.run(broker, worker_id=f"collector-{os.getpid()}", stop=stop)
    finally:
        await store.close()
