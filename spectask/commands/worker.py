"""`spectask worker ID`: a competing worker serving some or all task types until signalled."""

from __future__ import annotations

import argparse
import asyncio
import sys

from spectask.app import load_app
from spectask.errors import ConfigError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.worker import select_routes
from spectask.signals import stop_on_signals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("worker_id", help="a name for this worker, shown in results")
    parser.add_argument(
        "--types",
        default="",
        help="comma-separated task types to serve (default: all of the application's)",
    )
    parser.add_argument("--concurrency", type=int, help="handlers at once (SPECTASK_CONCURRENCY)")
    parser.add_argument("--prefetch", type=int, help="unacked deliveries (SPECTASK_PREFETCH)")
    parser.add_argument(
        "--burst", action="store_true", help="exit once the queues are empty (for tests and batch)"
    )


async def run(args: argparse.Namespace) -> int:
    overrides = {
        key: value
        for key, value in (("concurrency", args.concurrency), ("prefetch", args.prefetch))
        if value is not None
    }
    config = RuntimeConfig(**overrides)
    task_types = [t.strip() for t in args.types.split(",") if t.strip()]
    application = load_app(args.app)
    app = application.worker
    if app is None:
        raise ConfigError(
            f"--app {args.app or ''} names no worker: point it at your WorkerApp with its "
            "handlers registered (module:attribute), or at a spectask.Application with worker="
        )
    routes = application.module("worker").RECEIVE_ROUTES
    select_routes(routes, task_types)  # a typo in --types fails before connecting
    stop = asyncio.Event()
    who = f"worker {args.worker_id}"
    stop_on_signals(stop, who, timeout=config.shutdown_timeout)
    broker = await Broker.connect(config, name=f"spectask-worker-{args.worker_id}", stop=stop)
    async with broker:
        stats = await app.run(
            broker, worker_id=args.worker_id, task_types=task_types, stop=stop, burst=args.burst
        )
    print(
        f"worker {args.worker_id}: {stats.processed} processed, {stats.succeeded} succeeded, "
        f"{stats.failed} failed, {stats.dead_lettered} dead-lettered"
        + (f", {stats.skipped_repeats} repeats skipped" if stats.skipped_repeats else ""),
        file=sys.stderr,
    )
    return 0
