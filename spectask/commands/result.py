"""`spectask result ID`: the stored result of one task (JSON), over the status RPC."""

from __future__ import annotations

import argparse
import json
import sys

from spectask.commands.status import fetch
from spectask.protocol import models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task_id", metavar="ID", help="a task id")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for a collector (default 5)"
    )


async def run(args: argparse.Namespace) -> int:
    reply = await fetch([args.task_id], args.timeout, args.app)
    view = reply.tasks[0]
    state = view.state
    if state is models.TaskState.SUCCEEDED:
        print(json.dumps(view.result or {}, indent=2, sort_keys=True))
        return 0
    if state in (models.TaskState.FAILED, models.TaskState.DEAD, models.TaskState.CANCELLED):
        error = f": {view.error.type}: {view.error.message}" if view.error else ""
        print(f"task {args.task_id} is {state.value} and has no result{error}", file=sys.stderr)
        return 1
    if state is models.TaskState.UNKNOWN:
        print(f"task {args.task_id} is unknown to the task store", file=sys.stderr)
        return 1
    print(f"task {args.task_id} is not finished yet ({state.value})", file=sys.stderr)
    return 1
