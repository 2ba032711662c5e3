"""Waiting for tasks to reach a final state, through the status operation (not by consuming).

Reading status from the collectors' store means any number of producers can wait on their own
tasks while the results queue keeps its single purpose.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence

from generated import models
from generated.producer import ProducerClient
from spectask.commands.summary import percentile

FINAL = frozenset(
    {
        models.TaskState.SUCCEEDED,
        models.TaskState.FAILED,
        models.TaskState.DEAD,
        models.TaskState.CANCELLED,
    }
)
BATCH = 1000  # the StatusRequest schema's maxItems
POLL_SECONDS = 0.5


async def wait_until_final(
    client: ProducerClient,
    task_ids: Sequence[str],
    *,
    deadline: float,
    on_progress: Callable[[int], None] | None = None,
    rpc_timeout: float = 5.0,
) -> tuple[dict[str, models.TaskStatusView], list[str]]:
    """Poll until every task is final or `deadline` (monotonic) passes: (final views, pending)."""
    final: dict[str, models.TaskStatusView] = {}
    pending = list(dict.fromkeys(task_ids))
    while pending:
        for start in range(0, len(pending), BATCH):
            reply = await client.get_status(pending[start : start + BATCH], timeout=rpc_timeout)
            for view in reply.tasks:
                if view.state in FINAL:
                    final[view.task_id] = view
        before = len(pending)
        pending = [task_id for task_id in pending if task_id not in final]
        if on_progress is not None and before != len(pending):
            on_progress(before - len(pending))
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL_SECONDS)
    return final, pending


def render_final(views: Sequence[models.TaskStatusView]) -> str:
    """A table by task type and final state, and the submit->finish latency percentiles."""
    counts = Counter((view.message_type or "?", view.state.value) for view in views)
    states = [state.value for state in models.TaskState if state in FINAL]
    lines = [f"{'task type':<34}" + "".join(f"{state:>11}" for state in states)]
    for message_type in sorted({t for t, _ in counts}):
        row = "".join(f"{counts[(message_type, state)]:>11}" for state in states)
        lines.append(f"{message_type:<34}{row}")
    latencies = sorted(
        (view.finished_at - view.submitted_at).total_seconds() * 1000
        for view in views
        if view.finished_at is not None and view.submitted_at is not None
    )
    if latencies:
        lines.append(
            "latency submit->finish (ms): "
            + "  ".join(f"p{p}={percentile(latencies, p):.1f}" for p in (50, 95, 99))
        )
    return "\n".join(lines)
