"""How the command line shows tasks that became final (`ProducerClient.wait` gets them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from spectask.commands.summary import percentile
from spectask.protocol import models, names

FINAL = names.FINAL_STATES


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
