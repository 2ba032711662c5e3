"""`spectask collect`: results into the task store, status requests answered from it.

Every result is written to the store (`STORE_URL`, SQLite by default) before its delivery is
acked; a store that is down leaves the result in its queue (requeued with backoff), never lost.
The same goes for the broker's copies of every task (QUEUED) and every dead letter (DEAD), and
for lifecycle events (RETRYING): none of them costs the producer or the worker an extra
publish on the success path. A result the store cannot hold (`StoreDataError`: an attempt out
of range, ...) is dead-lettered with reason `unstorable` instead (see `spectask.collector`);
it is neither counted nor printed here.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import IO

from spectask.app import load_app
from spectask.collector import add_store_handlers
from spectask.commands.summary import ResultSummary
from spectask.protocol import models
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.signals import stop_on_signals
from spectask.store import open_store

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expect",
        type=int,
        help="stop after this collector got this many distinct results (of --batch, if given); "
        "competing collectors each count their own share",
    )
    parser.add_argument("--batch", help="count only task ids starting with BATCH- toward --expect")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
    parser.add_argument("--output", type=Path, help="append every result as a JSON line here")
    parser.add_argument("--quiet", action="store_true", help="no line per result")
    parser.add_argument(
        "--expected-failures",
        type=int,
        default=0,
        help="exit 0 only if exactly this many tasks failed (default 0)",
    )


def _latency_ms(result: models.TaskResult) -> float | None:
    if result.submitted_at is None or result.finished_at is None:
        return None
    return (result.finished_at - result.submitted_at).total_seconds() * 1000


async def run(args: argparse.Namespace) -> int:
    app = load_app(args.app).module("collector").CollectorApp()
    store = await open_store()
    add_store_handlers(app, store)
    summary = ResultSummary()
    batch_summary = ResultSummary()
    stop = asyncio.Event()
    config = RuntimeConfig()
    who = f"collector {os.getpid()}"
    stop_on_signals(stop, who, timeout=config.shutdown_timeout)
    prefix = f"{args.batch}-" if args.batch else ""
    sink: IO[str] | None = args.output.open("a") if args.output else None

    async def on_result(result: models.TaskResult, context: TaskContext) -> None:
        # Before the ack: a store that is down requeues the result, StoreDataError
        # dead-letters it (reason `unstorable`), and neither counts it below.
        await store.apply_result(result)
        fields = (result.message_type, result.status.value, result.worker_id, _latency_ms(result))
        if not summary.add(result.task_id, *fields):
            return
        if result.task_id.startswith(prefix):
            batch_summary.add(result.task_id, *fields)
        if sink is not None:
            # flushed per line: a collector killed mid-run keeps every line it stored
            sink.write(result.model_dump_json(exclude_none=True) + "\n")
            sink.flush()
        if not args.quiet:
            detail = f" {result.error.type}: {result.error.message}" if result.error else ""
            print(
                f"{result.status.value:<9} {result.task_id} {result.message_type} "
                f"by {result.worker_id}{detail}",
                flush=True,
            )
        if args.expect and batch_summary.total >= args.expect:
            stop.set()

    app.collect_result(on_result)
    worker_id = f"collector-{os.getpid()}"
    timed_out = False
    try:
        broker = await Broker.connect(config, name="spectask-collector", stop=stop)
        async with broker:
            runner = asyncio.create_task(app.run(broker, worker_id=worker_id, stop=stop))
            try:
                await asyncio.wait_for(asyncio.shield(runner), timeout=args.timeout)
            except TimeoutError:
                timed_out = True
                stop.set()
                await runner
    finally:
        await store.close()
        if sink is not None:
            sink.close()
    shown = batch_summary if args.batch else summary
    print(shown.render(), flush=True)
    if timed_out:
        print(
            f"timed out after {args.timeout:g}s with {shown.total} of {args.expect} results",
            file=sys.stderr,
        )
        return 1
    if shown.failed != args.expected_failures:
        print(f"{shown.failed} tasks failed; expected {args.expected_failures}", file=sys.stderr)
        return 2
    return 0
