"""Summaries of task results: counts per type and per worker, and latency percentiles.

Keyed by task id, so a duplicate delivery (which at-least-once allows) is counted once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile of already sorted values (numpy's default method)."""
    if not sorted_values:
        return float("nan")
    rank = (len(sorted_values) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass
class ResultSummary:
    """Results seen so far; `add` returns False for a task id already counted."""

    by_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_worker: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0

    def add(
        self,
        task_id: str,
        message_type: str,
        status: str,
        worker_id: str,
        latency_ms: float | None,
    ) -> bool:
        if task_id in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(task_id)
        self.by_type[(message_type, status)] += 1
        self.by_worker[worker_id] += 1
        if latency_ms is not None:
            self.latencies_ms.append(latency_ms)
        return True

    @property
    def total(self) -> int:
        return len(self.seen)

    @property
    def failed(self) -> int:
        return sum(n for (_, status), n in self.by_type.items() if status != "succeeded")

    def render(self) -> str:
        types = sorted({message_type for message_type, _ in self.by_type})
        lines = [f"{'task type':<34}{'succeeded':>10}{'failed':>8}"]
        for message_type in types:
            ok = self.by_type[(message_type, "succeeded")]
            bad = sum(
                n for (t, s), n in self.by_type.items() if t == message_type and s != "succeeded"
            )
            lines.append(f"{message_type:<34}{ok:>10}{bad:>8}")
        lines.append(f"{'total':<34}{self.total - self.failed:>10}{self.failed:>8}")
        lines.append("")
        lines.append(f"{'worker':<34}{'tasks':>10}")
        for worker, count in sorted(self.by_worker.items()):
            lines.append(f"{worker:<34}{count:>10}")
        ordered = sorted(self.latencies_ms)
        if ordered:
            lines.append("")
            lines.append(
                "latency submit->result (ms): "
                + "  ".join(f"p{p}={percentile(ordered, p):.1f}" for p in (50, 95, 99))
                + f"  max={ordered[-1]:.1f}"
            )
        if self.duplicates:
            lines.append(f"duplicate deliveries ignored: {self.duplicates}")
        return "\n".join(lines)
