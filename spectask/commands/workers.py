"""`spectask workers`: the workers whose heartbeats reached the broker lately, online or lost."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from datetime import UTC, datetime

from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.tables import format_table
from spectask.workers import WorkerView, WorkerWatch

SETTLE_SECONDS = 0.5  # the stream's backlog arrives at once; this long without one is the end


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON array, for machines")


async def read_board(broker: Broker) -> list[WorkerView]:
    """The heartbeat stream's last minutes, read until it has been quiet for SETTLE_SECONDS."""
    watch = WorkerWatch(broker)
    await watch.start()
    try:
        while True:
            watch.received.clear()
            try:
                await asyncio.wait_for(watch.received.wait(), timeout=SETTLE_SECONDS)
            except TimeoutError:
                break
            newest = max((v.heartbeat.at for v in watch.board.views()), default=None)
            if newest is not None and (datetime.now(UTC) - newest).total_seconds() < 0.2:
                break  # caught up with live heartbeats
    finally:
        with contextlib.suppress(Exception):
            await watch.close()
    return watch.board.views()


def render(views: list[WorkerView]) -> str:
    if not views:
        return "no worker heartbeats in the last minutes (is a worker running on this broker?)"
    now = datetime.now(UTC)
    rows = [
        ("WORKER", "STATE", "HOST", "PID", "TYPES", "CONC", "IN FLIGHT", "DONE", "FAILED", "SEEN")
    ]
    for view in views:
        beat = view.heartbeat
        rows.append(
            (
                beat.worker_id,
                "lost" if view.lost else "online",
                beat.host,
                str(beat.pid),
                ",".join(beat.task_types),
                str(beat.concurrency),
                str(beat.in_flight),
                str(beat.processed),
                str(beat.failed),
                f"{(now - beat.at).total_seconds():.0f}s ago",
            )
        )
    return format_table(rows)


async def run(args: argparse.Namespace) -> int:
    broker = await Broker.connect(RuntimeConfig(), name="spectask-workers")
    async with broker:
        views = await read_board(broker)
    if args.json:
        print(json.dumps([view.to_json() for view in views], indent=2))
    else:
        print(render(views))
    return 0
