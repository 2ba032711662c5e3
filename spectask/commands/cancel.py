"""`spectask cancel ID...`: cancel queued, retrying or running tasks.

The cancellation goes to the cancellations stream that every worker follows
(`spectask.runtime.cancellation`): a task not yet running is skipped by whichever worker takes
it and ends CANCELLED; a running one is asked to stop and ends CANCELLED when its handler
checks (`ctx.progress`, `ctx.raise_if_cancelled`), else it finishes normally. Before
publishing, the command asks the collectors for each task's state (status RPC) so it can
refuse an id nobody has seen (a typo) and skip tasks that are already final; `--force`
cancels without asking (when no collector runs).

Exit status: 0 when the cancellation was requested (and, with `--wait`, every task ended
CANCELLED); 1 on an error (an unknown id, no collector answering, a `--wait` that ran out);
2 when `--wait` saw a task finish before the cancellation reached it.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from datetime import UTC, datetime

from spectask.app import load_app
from spectask.commands.waiting import render_final
from spectask.protocol import models
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.waiting import WaitTimeoutError, is_final

MAX_IDS = 1000  # the TaskCancel schema's maxItems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task_ids", nargs="+", metavar="ID", help="task ids (up to 1000)")
    parser.add_argument("--reason", default="", help="why (kept with the cancellation)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="cancel without asking the collectors first (unknown ids are cancelled too)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait until the tasks are final and show how they ended"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds --wait waits (default 60)"
    )
    parser.add_argument(
        "--rpc-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for a collector to answer the status check (default 5)",
    )


def _requester() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def run(args: argparse.Namespace) -> int:
    ids = list(dict.fromkeys(args.task_ids))
    if len(ids) > MAX_IDS:
        print(f"error: at most {MAX_IDS} ids per call", file=sys.stderr)
        return 1
    app = load_app(args.app)
    broker = await Broker.connect(RuntimeConfig(), name="spectask-cancel")
    async with broker:
        client = await app.module("producer").ProducerClient.open(broker)
        to_cancel = ids
        problems = 0
        if not args.force:
            reply = await client.get_status(ids, timeout=args.rpc_timeout)
            to_cancel = []
            for view in reply.tasks:
                if view.state is models.TaskState.UNKNOWN:
                    problems += 1
                    print(
                        f"{view.task_id}: unknown (never seen by a collector); not cancelled "
                        "(check the id, or use --force)"
                    )
                elif is_final(view):
                    print(f"{view.task_id}: already {view.state.value}; nothing to cancel")
                else:
                    to_cancel.append(view.task_id)
        if to_cancel:
            await client.cancel_tasks(
                models.TaskCancel(
                    task_ids=to_cancel,
                    requested_at=datetime.now(UTC),
                    requested_by=_requester(),
                    reason=args.reason or None,
                )
            )
            print(
                f"cancel requested for {len(to_cancel)} task(s): a task not yet running is "
                "skipped and ends CANCELLED; a running one ends CANCELLED when its handler "
                "checks for cancellation"
            )
        if not args.wait or not to_cancel:
            return 1 if problems else 0
        try:
            final = await client.wait(to_cancel, args.timeout)
        except WaitTimeoutError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(render_final(list(final.values())))
        cancelled = sum(view.state is models.TaskState.CANCELLED for view in final.values())
        if cancelled < len(final):
            print(f"{len(final) - cancelled} task(s) finished before the cancellation reached them")
            return 2
        return 1 if problems else 0
