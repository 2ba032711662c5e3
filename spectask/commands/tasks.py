"""`spectask tasks`: recent tasks from the store, newest first, by batch, state and type."""

from __future__ import annotations

import argparse
import json

from spectask.collector import status_view
from spectask.errors import ConfigError
from spectask.protocol.models import TaskState
from spectask.store import open_store
from spectask.store.batches import list_tasks
from spectask.store.records import TaskRecord
from spectask.store.states import STORED_STATES
from spectask.tables import format_table

STATES = [state.value.lower() for state in STORED_STATES]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", help="only tasks of this batch (all runs of produce --batch B)")
    parser.add_argument("--id", dest="id_prefix", help="only ids that start with this")
    parser.add_argument("--state", choices=STATES, help="only tasks in this state")
    parser.add_argument("--type", dest="message_type", help="only this message type (a.b)")
    parser.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    parser.add_argument("--offset", type=int, default=0, help="skip this many (paging)")
    parser.add_argument("--json", action="store_true", help="one JSON array, for machines")
    parser.add_argument(
        "--recount",
        action="store_true",
        help="rebuild the kept counts by type and state from the table (after a bulk load, "
        "or rows an older spectask wrote), print them, and exit",
    )


def record_json(record: TaskRecord) -> dict[str, object]:
    """A record as the status RPC shows it (the protocol's TaskStatusView), JSON-ready."""
    return status_view(record.task_id, record).model_dump(mode="json", exclude_none=True)


def render(records: list[TaskRecord]) -> str:
    if not records:
        return "no tasks match"
    rows = [("TASK", "STATE", "TYPE", "ATTEMPTS", "WORKER", "UPDATED")]
    for record in records:
        rows.append(
            (
                record.task_id,
                record.state.value,
                record.message_type or "-",
                str(record.attempts),
                record.worker_id or "-",
                record.updated_at.isoformat(timespec="seconds"),
            )
        )
    return format_table(rows)


def render_counts(counts: dict[str, dict[TaskState, int]]) -> str:
    rows = [("TYPE", *(state.value for state in STORED_STATES))]
    for message_type, per_state in sorted(counts.items()):
        rows.append((message_type or "-", *(str(per_state[state]) for state in STORED_STATES)))
    return format_table(rows)


async def recount() -> int:
    """`--recount`: the counts the dashboard reads, rebuilt from the tasks table."""
    store = await open_store()
    try:
        await store.recount()
        counts = await store.counts_by_type()
    finally:
        await store.close()
    print(render_counts(counts))
    return 0


async def run(args: argparse.Namespace) -> int:
    if args.recount:
        return await recount()
    if args.limit < 1 or args.offset < 0:
        raise ConfigError("--limit must be at least 1 and --offset at least 0")
    store = await open_store()
    try:
        records = await list_tasks(
            store,
            state=TaskState(args.state.upper()) if args.state else None,
            message_type=args.message_type,
            batch=args.batch,
            id_prefix=args.id_prefix,
            limit=args.limit,
            offset=args.offset,
        )
    finally:
        await store.close()
    print(json.dumps([record_json(r) for r in records], indent=2) if args.json else render(records))
    return 0
