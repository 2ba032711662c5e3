"""`spectask worker ID`: a competing worker serving some or all task types until signalled."""

from __future__ import annotations

import argparse
import asyncio
import sys

from generated.topology import POLICIES
from generated.worker import RECEIVE_ROUTES, WorkerApp
from spectask.commands.signals import stop_on_signals
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.worker import select_routes
from spectask.tasks.handlers import register_all
from spectask.tasks.settings import TaskSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("worker_id", help="a name for this worker, shown in results")
    parser.add_argument(
        "--types",
        default="",
        help=f"comma-separated task types to serve (default: all of {', '.join(sorted(POLICIES))})",
    )
    parser.add_argument("--concurrency", type=int, help="handlers at once (SPECTASK_CONCURRENCY)")
    parser.add_argument("--prefetch", type=int, help="unacked deliveries (SPECTASK_PREFETCH)")
    parser.add_argument(
        "--burst", action="store_true", help="exit once the queues are empty (for tests and batch)"
    )


def build_app() -> WorkerApp:
    app = WorkerApp()
    register_all(app, TaskSettings())
    return app


async def run(args: argparse.Namespace) -> int:
    overrides = {
        key: value
        for key, value in (("concurrency", args.concurrency), ("prefetch", args.prefetch))
        if value is not None
    }
    config = RuntimeConfig(**overrides)
    task_types = [t.strip() for t in args.types.split(",") if t.strip()]
    select_routes(RECEIVE_ROUTES, task_types)  # a typo in --types fails before connecting
    app = build_app()
    stop = asyncio.Event()
    stop_on_signals(stop)
    broker = await Broker.connect(config, name=f"spectask-worker-{args.worker_id}")
    async with broker:
        stats = await app.run(
            broker, worker_id=args.worker_id, task_types=task_types, stop=stop, burst=args.burst
        )
    print(
        f"worker {args.worker_id}: {stats.processed} processed, {stats.succeeded} succeeded, "
        f"{stats.failed} failed, {stats.dead_lettered} dead-lettered",
        file=sys.stderr,
    )
    return 0
