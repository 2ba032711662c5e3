"""`spectask status ID...`: the stored state of tasks, from the collectors (status RPC)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from spectask.app import load_app
from spectask.protocol import models
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig

MAX_IDS = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task_ids", nargs="+", metavar="ID", help="task ids (up to 1000)")
    parser.add_argument("--json", action="store_true", help="print the reply as JSON")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for a collector (default 5)"
    )


async def fetch(
    task_ids: Sequence[str], timeout: float, app_name: str | None = None
) -> models.StatusReply:
    """One status RPC from a short-lived connection."""
    app = load_app(app_name)
    broker = await Broker.connect(RuntimeConfig(), name="spectask-status")
    async with broker:
        client = await app.module("producer").ProducerClient.open(broker)
        reply: models.StatusReply = await client.get_status(task_ids, timeout=timeout)
        return reply


def _time(value: object) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else "-"


def render_table(reply: models.StatusReply) -> str:
    rows = [("TASK", "STATE", "TYPE", "ATTEMPTS", "WORKER", "FINISHED", "ERROR")]
    for view in reply.tasks:
        error = f"{view.error.type}: {view.error.message}" if view.error else ""
        rows.append(
            (
                view.task_id,
                view.state.value,
                view.message_type or "-",
                str(view.attempts) if view.attempts is not None else "-",
                view.worker_id or "-",
                _time(view.finished_at),
                error[:60],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ).rstrip()


async def run(args: argparse.Namespace) -> int:
    ids = list(dict.fromkeys(args.task_ids))
    if len(ids) > MAX_IDS:
        print(f"error: at most {MAX_IDS} ids per call", flush=True)
        return 2
    reply = await fetch(ids, args.timeout, args.app)
    if args.json:
        print(json.dumps(reply.model_dump(mode="json", exclude_none=True), indent=2))
    else:
        print(render_table(reply))
    return 0
