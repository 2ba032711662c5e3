"""`spectask collect`: results into the task store, status requests answered from it.

Every result is written to the store (`STORE_URL`, SQLite by default) before its delivery is
acked; a store error leaves the result in its queue (requeued with backoff), never lost. The
same goes for the broker's copies of every task (QUEUED) and every dead letter (DEAD), and for
lifecycle events (RETRYING): none of them costs the producer or the worker an extra publish
on the success path.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import RootModel, ValidationError

from generated import models
from generated.collector import CollectorApp
from spectask.commands.signals import stop_on_signals
from spectask.commands.summary import ResultSummary
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.store import TaskRecord, TaskStore, open_store
from spectask.store.observations import EventKind, Observation, observation_from_dead_letter

log = logging.getLogger("spectask.collector")


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


def status_view(task_id: str, record: TaskRecord | None) -> models.TaskStatusView:
    """What the status RPC says about one id (UNKNOWN for an id never seen)."""
    if record is None:
        return models.TaskStatusView(task_id=task_id, state=models.TaskState.UNKNOWN)
    document: dict[str, Any] = {
        "task_id": task_id,
        "state": record.state.name,
        "message_type": record.message_type,
        "attempts": record.attempts,
        "worker_id": record.worker_id,
        "progress": record.progress,
        "progress_message": record.progress_message,
        "submitted_at": record.submitted_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "updated_at": record.updated_at,
        "result": record.result,
        "error": record.error.to_json() if record.error else None,
        "dead_reason": record.dead_reason,
    }
    return models.TaskStatusView.model_validate(
        {key: value for key, value in document.items() if value is not None}
    )


def submitted_observation(context: TaskContext, *, now: datetime) -> Observation | None:
    """The QUEUED observation of the broker's copy of a task (None without a task id).

    A retry coming back from its tier carries its next attempt number, so it is that
    attempt's QUEUED; the event time of a first attempt is its submission time.
    """
    if not context.task_id:
        return None
    submitted_at = context.submitted_at
    at = submitted_at if submitted_at is not None and context.attempt == 1 else now
    return Observation(
        task_id=context.task_id,
        kind=EventKind.SUBMITTED,
        at=at,
        attempt=max(1, context.attempt),
        message_type=context.message_type or None,
        submitted_at=submitted_at,
    )


def dead_observation(context: TaskContext, *, now: datetime) -> Observation | None:
    """The DEAD observation of a dead letter (None without a task id or a readable reason)."""
    if not context.task_id:
        return None
    try:
        headers = models.DeadLetterHeaders.model_validate(dict(context.headers))
    except ValidationError as exc:
        log.warning("dead letter %s has unreadable headers: %s", context.task_id, exc)
        return None
    return observation_from_dead_letter(
        headers, task_id=context.task_id, message_type=context.message_type, received_at=now
    )


def add_store_handlers(app: CollectorApp, store: TaskStore) -> None:
    """The status RPC answered from `store`, in request order; task copies, dead letters and
    events written to it (results are the caller's, who may also want to print them)."""

    @app.collect_submitted
    async def on_submitted(body: RootModel[Any], context: TaskContext) -> None:
        observation = submitted_observation(context, now=datetime.now(UTC))
        if observation is not None:
            await store.apply(observation)

    @app.collect_dead_letter
    async def on_dead_letter(body: RootModel[Any], context: TaskContext) -> None:
        observation = dead_observation(context, now=datetime.now(UTC))
        if observation is not None:
            await store.apply(observation)

    @app.collect_event
    async def on_event(event: models.TaskEvent, context: TaskContext) -> None:
        await store.apply_event(event)

    @app.answer_status
    async def on_status(request: models.StatusRequest, context: TaskContext) -> models.StatusReply:
        records = await store.get_many(request.task_ids)
        return models.StatusReply(tasks=[status_view(i, records.get(i)) for i in request.task_ids])


async def run(args: argparse.Namespace) -> int:
    app = CollectorApp()
    store = await open_store()
    add_store_handlers(app, store)
    summary = ResultSummary()
    batch_summary = ResultSummary()
    stop = asyncio.Event()
    stop_on_signals(stop)
    prefix = f"{args.batch}-" if args.batch else ""
    sink: IO[str] | None = args.output.open("a") if args.output else None

    @app.collect_result
    async def on_result(result: models.TaskResult, context: TaskContext) -> None:
        await store.apply_result(result)  # before the ack; an error requeues the result
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

    broker = await Broker.connect(RuntimeConfig(), name="spectask-collector")
    worker_id = f"collector-{os.getpid()}"
    timed_out = False
    try:
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
