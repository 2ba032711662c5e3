"""Throughput and latency over the last 15 minutes, folded from the store's changes.

The dashboard follows the store with `changed_since` (the updated_at index: each change is
read once, never the whole table each second) and folds every task that reached a final state
into 10-second buckets: how many finished, succeeded or failed, and their submit-to-finish
latencies, for the page's charts and the /metrics histogram. A restarted dashboard reads the
last 15 minutes back from the store, so the charts survive it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from spectask.commands.summary import percentile
from spectask.protocol.models import TaskState
from spectask.store.records import TaskRecord

WINDOW = timedelta(minutes=15)
BUCKET_SECONDS = 10


@dataclass
class Bucket:
    """The tasks that finished within one BUCKET_SECONDS slot."""

    start: datetime
    succeeded: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "at": self.start.isoformat(),
            "finished": self.succeeded + self.failed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "per_second": (self.succeeded + self.failed) / BUCKET_SECONDS,
            "p50": percentile(ordered, 50) if ordered else None,
            "p95": percentile(ordered, 95) if ordered else None,
        }


def latency_seconds(record: TaskRecord) -> float | None:
    """Submit (or start) to finish, in seconds; None when the store lacks either end."""
    begin = record.submitted_at or record.started_at
    if begin is None or record.finished_at is None:
        return None
    return max(0.0, (record.finished_at - begin).total_seconds())


class History:
    """Finished tasks per bucket over WINDOW; `add` each changed record once."""

    def __init__(
        self, on_finished: Callable[[TaskRecord, float | None], None] | None = None
    ) -> None:
        self._buckets: dict[datetime, Bucket] = {}
        self._on_finished = on_finished
        self._seen: dict[str, TaskState] = {}

    @staticmethod
    def slot(at: datetime) -> datetime:
        at = at.astimezone(UTC)
        return at.replace(second=at.second - at.second % BUCKET_SECONDS, microsecond=0)

    def add(self, record: TaskRecord) -> None:
        if not record.is_final or self._seen.get(record.task_id) is record.state:
            return
        self._seen[record.task_id] = record.state
        at = record.finished_at or record.updated_at
        latency = latency_seconds(record)
        if self._on_finished is not None:
            self._on_finished(record, latency)
        if datetime.now(UTC) - at > WINDOW:
            return
        start = self.slot(at)
        bucket = self._buckets.setdefault(start, Bucket(start))
        if record.state is TaskState.SUCCEEDED:
            bucket.succeeded += 1
        else:
            bucket.failed += 1
        if latency is not None:
            bucket.latencies.append(latency)

    def prune(self, now: datetime | None = None) -> None:
        """Forget buckets (and ids) older than the window; called once per tick."""
        limit = (now or datetime.now(UTC)) - WINDOW
        for start in [s for s in self._buckets if s < limit]:
            del self._buckets[start]
        if len(self._seen) > 200_000:  # ids only guard against a change read twice
            self._seen.clear()

    def series(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Every bucket of the window, oldest first, empty ones included (for the charts)."""
        now = now or datetime.now(UTC)
        first = self.slot(now - WINDOW) + timedelta(seconds=BUCKET_SECONDS)
        count = int(WINDOW.total_seconds() // BUCKET_SECONDS)
        slots = [first + timedelta(seconds=BUCKET_SECONDS * n) for n in range(count)]
        return [self._buckets.get(start, Bucket(start)).to_json() for start in slots]
