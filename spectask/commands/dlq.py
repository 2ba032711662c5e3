"""`spectask dlq`: inspect, replay and purge the dead-letter queue (the work is in spectask.dlq).

The queue comes from the application's generated topology (`--app`: the queue bound to the
exchange dead letters are published to); `--queue` points at another one and then needs no
generated code at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

from spectask import dlq
from spectask.app import load_app
from spectask.errors import ConfigError
from spectask.protocol.names import DEAD_LETTER_MESSAGE_TYPE, TRACEBACK_HEADER
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.deadletter import DeadReason
from spectask.runtime.topology import Topology

REASONS = [reason.value for reason in DeadReason]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--queue", help="dead-letter queue to use (default: the one the spec's topology declares)"
    )
    common.add_argument("--app", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    listing = sub.add_parser("list", parents=[common], help="every dead letter, decoded")
    listing.add_argument("--json", action="store_true", help="one JSON array, for machines")
    listing.add_argument("--reason", choices=REASONS, help="only dead letters with this reason")
    listing.add_argument("--limit", type=int, help="at most this many (oldest first)")

    show = sub.add_parser("show", parents=[common], help="one dead letter in full")
    show.add_argument("task_id", metavar="ID", help="the task id (see `dlq list`)")

    again = sub.add_parser(
        "replay", parents=[common], help="publish dead letters back to where they came from"
    )
    again.add_argument("task_ids", nargs="*", metavar="ID", help="task ids to replay")
    again.add_argument("--reason", choices=REASONS, help="replay those with this reason")
    again.add_argument("--all", action="store_true", help="replay every dead letter")

    purge = sub.add_parser("purge", parents=[common], help="delete dead letters")
    purge.add_argument("--reason", choices=REASONS, help="only those with this reason")
    purge.add_argument("--yes", action="store_true", help="do not ask (needed without a TTY)")


def spec_queue(app_name: str | None = None) -> tuple[str, Topology]:
    """The dead-letter queue of the spec: the one queue bound to the dead-letter exchange that
    no service taps (the collector's copy queue is consumed, not kept for inspection)."""
    app = load_app(app_name)
    send_routes = app.module("worker").SEND_ROUTES
    receive_routes = app.module("collector").RECEIVE_ROUTES
    topology: Topology = app.topology
    exchange = next(r.exchange for r in send_routes if r.message_type == DEAD_LETTER_MESSAGE_TYPE)
    tapped = {route.queue for route in receive_routes if route.is_tap}
    queues = [
        q.name
        for q in topology.queues
        if q.name not in tapped and any(b.exchange == exchange for b in q.bindings)
    ]
    if len(queues) != 1:
        raise ConfigError(
            f"the spec binds {len(queues)} queues to the dead-letter exchange {exchange!r} "
            f"({', '.join(queues) or 'none'}); pass --queue to choose one"
        )
    return queues[0], topology


def format_age(age: timedelta | None) -> str:
    if age is None:
        return "?"
    seconds = max(0, int(age.total_seconds()))
    for unit, size, sub_unit, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}{(seconds % size) // sub_size:02d}{sub_unit}"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def format_time(value: datetime | None) -> str:
    return "?" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render_list(views: list[dlq.DeadLetterView], queue: str, now: datetime) -> str:
    lines = [f"{len(views)} dead letter(s) in {queue}"]
    for view in views:
        attempts = "?" if view.attempts is None else str(view.attempts)
        lines += [
            "",
            f"{view.task_id or '(no task id)'}  {view.message_type or '(no type)'}  "
            f"{view.reason}  attempts={attempts}  age={format_age(view.age(now))}",
            f"  from {view.origin_queue or '?'} (routing key {view.origin_routing_key or '?'})"
            f"  first failure {format_time(view.first_failure_at)}"
            f"  last {format_time(view.last_failure_at)}",
            f"  {view.error_line or '(no error text)'}",
        ]
    return "\n".join(lines)


def render_show(view: dlq.DeadLetterView, now: datetime) -> str:
    headers = {k: v for k, v in dlq.plain_headers(view).items() if k != TRACEBACK_HEADER}
    lines = [
        f"task id:       {view.task_id or '(none)'}",
        f"message type:  {view.message_type or '(none)'}",
        f"reason:        {view.reason}",
        f"attempts:      {'?' if view.attempts is None else view.attempts}",
        f"origin:        queue {view.origin_queue or '?'}, exchange {view.origin_exchange!r}, "
        f"routing key {view.origin_routing_key or '?'}",
        f"failed:        first {format_time(view.first_failure_at)}, "
        f"last {format_time(view.last_failure_at)} ({format_age(view.age(now))} ago)",
        f"content type:  {view.content_type}   priority: {view.priority}",
        "error:",
        *(f"  {line}" for line in (view.error or "(none)").splitlines()),
        "headers:",
        *(f"  {key}: {json.dumps(value, ensure_ascii=False)}" for key, value in headers.items()),
        "traceback:",
        *(f"  {line}" for line in (view.traceback or "(none)").splitlines()),
        "body: " + dlq.body_preview(view.body),
    ]
    return "\n".join(lines)


async def ask_on_tty(queue: str, count: int) -> bool:
    """The purge prompt, in a thread: a blocking input() would stall the AMQP heartbeats."""
    try:
        answer = await asyncio.to_thread(input, f"delete {count} dead letters from {queue}? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


async def run(args: argparse.Namespace) -> int:
    if args.dlq_command == "purge" and not args.yes and not sys.stdin.isatty():
        raise ConfigError(
            "refusing to purge: no terminal to confirm on; pass --yes to delete without asking"
        )
    if args.dlq_command == "replay" and args.all and (args.task_ids or args.reason):
        raise ConfigError("--all replays everything; do not combine it with ids or --reason")
    topology: Topology | None = None
    queue = args.queue
    if not queue:
        queue, topology = spec_queue(args.app)
    async with await Broker.connect(RuntimeConfig(), name="spectask-dlq") as broker:
        if topology is not None:
            await broker.declare(topology)  # idempotent, as every spectask process does
            queue = broker.naming.name(queue)  # the spec's queue (a --queue is taken as given)
        return await _dispatch(args, broker, queue)


async def _dispatch(args: argparse.Namespace, broker: Broker, queue: str) -> int:
    now = datetime.now(UTC)
    if args.dlq_command == "list":
        views = await dlq.list_dead_letters(broker, queue, reason=args.reason, limit=args.limit)
        if args.json:
            print(json.dumps([view.summary(now) for view in views], indent=2))
        else:
            print(render_list(views, queue, now))
        return 0
    if args.dlq_command == "show":
        views = await dlq.list_dead_letters(broker, queue, task_ids={args.task_id})
        if not views:
            raise dlq.NoMatchingDeadLettersError(
                f"no dead letter in {queue!r} with task id {args.task_id}"
            )
        print(render_show(views[0], now))
        if len(views) > 1:
            print(f"\n({len(views)} dead letters have this task id; this is the oldest)")
        return 0
    if args.dlq_command == "replay":
        report = await dlq.replay(
            broker, queue, task_ids=args.task_ids, reason=args.reason, replay_all=args.all
        )
        for view in report.replayed:
            print(
                f"replayed {view.task_id} {view.message_type} -> exchange "
                f"{view.origin_exchange!r} key {view.origin_routing_key!r} (was {view.reason})"
            )
        for view, error in report.failed:
            print(f"error: not replayed {view.task_id}: {error}", file=sys.stderr)
        print(f"{len(report.replayed)} replayed, {len(report.failed)} failed (still dead)")
        return 1 if report.failed else 0
    asked: list[int] = []

    async def confirm(count: int) -> bool:
        asked.append(count)
        return True if args.yes else await ask_on_tty(queue, count)

    deleted = await dlq.purge(broker, queue, reason=args.reason, confirm=confirm)
    if not asked:
        print(f"no dead letters{f' with reason {args.reason}' if args.reason else ''} in {queue}")
    elif not deleted:
        print("nothing deleted")
    else:
        print(f"deleted {deleted} dead letter(s) from {queue}")
    return 0
