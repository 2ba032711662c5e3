"""`spectask produce`: submit typed tasks, one from the command line or a mixed sample batch."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from spectask.app import Application, load_app
from spectask.commands.waiting import render_final
from spectask.errors import ConfigError, PublishError, TaskValidationError
from spectask.protocol import models
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.producer import TaskPublisher, batch_task_ids
from spectask.runtime.publisher import OutgoingMessage
from spectask.runtime.waiting import WaitTimeoutError
from spectask.samples import expand_selection, mixed_batch

PROGRESS_THRESHOLD = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=30, help="how many sample tasks (default 30)")
    parser.add_argument(
        "--types",
        default="",
        help="comma-separated task types or type.operation names for the sample mix "
        "(default: the application's default mix)",
    )
    parser.add_argument(
        "--task", help="submit one task of this type.operation with --params instead of samples"
    )
    parser.add_argument("--params", help="the task's payload as JSON, or @file.json")
    parser.add_argument("--priority", help="a priority name from the spec or a number 0-255")
    parser.add_argument(
        "--batch",
        help="task ids become BATCH-<run>-<n>, <run> random per submit (a collector's "
        "--batch BATCH counts them; reusing a label never reuses an id)",
    )
    parser.add_argument("--ids-file", type=Path, help="write the submitted task ids here")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait until every submitted task is final (asks the collectors' status operation)",
    )
    parser.add_argument(
        "--wait-timeout", type=float, default=600.0, help="seconds --wait waits (default 600)"
    )


def _routes(app: Application) -> dict[str, Any]:
    """The task send routes by message type (task types have a policy; cancelTasks has not)."""
    policies = app.policies
    send_routes = app.module("producer").SEND_ROUTES
    return {route.message_type: route for route in send_routes if route.task_type in policies}


def _load_params(text: str | None) -> dict[str, Any]:
    if not text:
        raise ConfigError("--task needs --params (a JSON object, or @file.json)")
    raw = text
    if text.startswith("@"):
        try:
            raw = Path(text[1:]).read_text()
        except OSError as exc:
            raise ConfigError(
                f"--params {text}: cannot read {text[1:]!r}: {exc.strerror}"
            ) from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError("--params must be a JSON object")
    return value


def build_messages(
    args: argparse.Namespace, publisher: TaskPublisher, app: Application
) -> list[OutgoingMessage]:
    """Validate every payload against its schema before anything is published."""
    routes = _routes(app)
    if args.task:
        if args.task not in routes:
            raise ConfigError(
                f"unknown task {args.task!r}; choose from {', '.join(sorted(routes))}"
            )
        items = [(args.task, _load_params(args.params))]
    else:
        if not app.samples:
            raise ConfigError(
                "this application offers no sample payloads; submit one task with "
                "--task TYPE.OPERATION --params JSON"
            )
        chosen = [t.strip() for t in args.types.split(",") if t.strip()] or list(app.mix)
        try:
            selection = expand_selection(app.samples, chosen)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        items = list(mixed_batch(app.samples, args.count, selection))
    ids = batch_task_ids(args.batch, len(items)) if args.batch else [None] * len(items)
    messages = []
    for task_id, (message_type, params) in zip(ids, items, strict=True):
        route = routes[message_type]
        try:
            payload = route.model.model_validate(params)
        except ValidationError as exc:
            raise TaskValidationError(f"invalid {message_type} task: {exc}") from None
        messages.append(publisher.build(route, payload, priority=args.priority, task_id=task_id))
    return messages


async def run(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    broker = await Broker.connect(RuntimeConfig(), name="spectask-producer")
    async with broker:
        await broker.declare(app.topology)
        publisher = TaskPublisher(await broker.publisher(), app.topology)
        messages = build_messages(args, publisher, app)
        started = time.perf_counter()
        show = len(messages) >= PROGRESS_THRESHOLD and sys.stderr.isatty()
        confirmed: list[str] = []
        try:
            with tqdm(total=len(messages), unit="task", disable=not show, file=sys.stderr) as bar:

                def tick(count: int) -> None:
                    bar.update(count)

                ids = await publisher.submit_many(messages, on_confirmed=tick, confirmed=confirmed)
        except PublishError as exc:
            report_partial(messages, confirmed, args.ids_file, f"{exc}")
            return 1
        except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us, then raises
            report_partial(messages, confirmed, args.ids_file, "interrupted")
            raise
        elapsed = time.perf_counter() - started
        report_submitted(messages, ids, elapsed, args.ids_file)
        if args.wait:
            client = app.module("producer").ProducerClient(publisher, broker.rpc())
            return await wait_and_report(client, ids, args)
    return 0


async def wait_and_report(client: Any, ids: list[str], args: argparse.Namespace) -> int:
    """--wait: a progress bar until every task is final, then the table; 2 if any failed."""
    show = sys.stderr.isatty()
    with tqdm(total=len(ids), unit="task", disable=not show, file=sys.stderr) as bar:

        def finished(count: int) -> None:
            bar.update(count)

        try:
            final = await client.wait(ids, args.wait_timeout, on_progress=finished)
        except WaitTimeoutError as exc:
            print(render_final(list(exc.final.values())))
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(render_final(list(final.values())))
    not_ok = sum(1 for view in final.values() if view.state is not models.TaskState.SUCCEEDED)
    return 2 if not_ok else 0


def report_partial(
    messages: list[OutgoingMessage], confirmed: list[str], ids_file: Path | None, why: str
) -> None:
    """A submit that stopped half-way: which ids the broker has, in files, and how many.

    The confirmed ids go to --ids-file (or a timestamped file here), the rest beside it with
    `.unconfirmed`: those may or may not be stored. `spectask status` tells which (QUEUED or
    later: stored; UNKNOWN once the collector has caught up: not stored), so nobody resubmits
    blindly and runs a task twice.
    """
    done = set(confirmed)
    pending = [m.message_id for m in messages if m.message_id not in done]
    target = ids_file or Path(f"spectask-submit-{time.strftime('%Y%m%d-%H%M%S')}.ids")
    target.write_text("".join(f"{task_id}\n" for task_id in confirmed))
    rest = target.with_name(target.name + ".unconfirmed")
    rest.write_text("".join(f"{task_id}\n" for task_id in pending))
    print(
        f"error: {len(confirmed)} of {len(messages)} tasks confirmed by the broker ({why}); "
        f"their ids are in {target}, the {len(pending)} others in {rest} (they may or may not "
        "be stored: `spectask status ID` says QUEUED or later for a stored one, UNKNOWN for one "
        "that is not)",
        file=sys.stderr,
    )


def report_submitted(
    messages: list[OutgoingMessage], ids: list[str], elapsed: float, ids_file: Path | None
) -> None:
    """The ids (a single one on stdout, for scripts) and counts per type on stderr."""
    if ids_file:
        ids_file.write_text("\n".join(ids) + "\n")
    counts = Counter(message.message_type for message in messages)
    if len(ids) == 1:
        print(ids[0])
    print(
        f"submitted {len(ids)} tasks in {elapsed:.2f}s ({len(ids) / max(elapsed, 1e-9):.0f}/s), "
        "all confirmed by the broker",
        file=sys.stderr,
    )
    for message_type, count in sorted(counts.items()):
        print(f"  {message_type:<34}{count:>6}", file=sys.stderr)
