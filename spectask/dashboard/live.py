"""The dashboard's live picture, refreshed once a second by ONE task however many pages watch.

Each tick reads what the page shows: tasks per type and state (the store), the spec's queues
(management API or passive declares), the workers (heartbeat stream, followed continuously)
and the store's changes since the last tick (for the charts and the recent-tasks list). Every
server-sent-events client and /metrics reads the same snapshot, so ten open pages cost the
store what one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from spectask.dashboard.history import WINDOW, History
from spectask.queues import QueueReport, QueueSource
from spectask.runtime.broker import Broker
from spectask.runtime.topology import Topology
from spectask.store import TaskStore
from spectask.store.protocol import ChangeCursor
from spectask.store.records import TaskRecord
from spectask.workers import WorkerWatch

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
QUEUE_EVERY = 2.0  # seconds between queue reads (a passive declare per queue adds up)
# The store's changes are read in chunks until CHANGES_BUDGET_MS is spent, so a backlog (the
# 15 minutes a starting dashboard reads back, a burst of work) costs each tick at most about
# the budget plus one chunk (a 5,000-record read took 370-720 ms at 1,000,000 rows) and is
# caught up over the next ticks, which keep their one-second pace.
CHANGES_CHUNK = 500
CHANGES_BUDGET_MS = 150.0
# Counting by type and state reads the whole table (~200 ms on SQLite, more on PostgreSQL at
# 1,000,000 rows): when it is that slow it is repeated every SLOW_COUNT_EVERY seconds only,
# so the rest of the picture (queues, workers, changes, charts) keeps its one-second pace.
SLOW_COUNT_MS = 150.0
SLOW_COUNT_EVERY = 5.0


@dataclass
class Snapshot:
    """What the page shows live; `version` grows by one each tick."""

    version: int = 0
    at: str = ""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    counts_every: float = TICK_SECONDS
    queues: dict[str, Any] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "at": self.at,
            "counts": self.counts,
            "counts_every": self.counts_every,
            "queues": self.queues,
            "workers": self.workers,
            "history": self.history,
            "changed": self.changed,
            "timings_ms": self.timings_ms,
            "problems": self.problems,
        }


class Live:
    """Refreshes the Snapshot every TICK_SECONDS until closed; `wait_newer` serves SSE."""

    def __init__(
        self, broker: Broker, store: TaskStore, topology: Topology, history: History
    ) -> None:
        self.broker = broker
        self.store = store
        self.queues = QueueSource(broker, topology)
        self.watch = WorkerWatch(broker)
        self.history = history
        self.snapshot = Snapshot()
        self.queue_report: QueueReport | None = None
        self._queues_at = 0.0
        self._counts: dict[str, dict[str, int]] = {}
        self._counts_at = 0.0
        self._counts_ms = 0.0
        self._cursor = ChangeCursor(datetime.now(UTC) - WINDOW)
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.watch.start()
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="spectask-dashboard-tick")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.tick()
            except Exception as exc:  # one bad tick (store or broker away) must not end it
                log.warning("dashboard refresh failed: %s (retrying each second)", exc)

    async def tick(self) -> None:
        timings: dict[str, float] = {}
        problems: list[str] = []
        slow = self._counts_ms > SLOW_COUNT_MS
        if not slow or time.monotonic() - self._counts_at >= SLOW_COUNT_EVERY:
            began = time.perf_counter()
            counts = await self.store.counts_by_type()
            self._counts_ms = timings["counts"] = (time.perf_counter() - began) * 1000
            self._counts_at = time.monotonic()
            self._counts = {
                message_type: {state.value.lower(): n for state, n in per_state.items()}
                for message_type, per_state in sorted(counts.items())
            }
        began = time.perf_counter()
        changed = await self._follow_changes()
        timings["changes"] = (time.perf_counter() - began) * 1000
        if self.queue_report is None or time.monotonic() - self._queues_at >= QUEUE_EVERY:
            began = time.perf_counter()
            try:
                self.queue_report = await self.queues.report()
            except Exception as exc:
                problems.append(f"queues: {exc}")
            self._queues_at = time.monotonic()
            timings["queues"] = (time.perf_counter() - began) * 1000
        self.history.prune()
        snapshot = Snapshot(
            version=self.snapshot.version + 1,
            at=datetime.now(UTC).isoformat(),
            counts=self._counts,
            counts_every=SLOW_COUNT_EVERY if self._counts_ms > SLOW_COUNT_MS else TICK_SECONDS,
            queues=self.queue_report.to_json() if self.queue_report else {},
            workers=[view.to_json() for view in self.watch.board.views()],
            history=self.history.series(),
            changed=[record.task_id for record in changed][-200:],
            timings_ms={key: round(value, 2) for key, value in timings.items()},
            problems=problems,
        )
        async with self._changed:
            self.snapshot = snapshot
            self._changed.notify_all()

    async def _follow_changes(self) -> list[TaskRecord]:
        """This tick's share of the store's changes (see CHANGES_BUDGET_MS), oldest first."""
        began = time.perf_counter()
        changed: list[TaskRecord] = []
        while True:
            page = await self.store.changed_since(self._cursor, CHANGES_CHUNK)
            chunk, self._cursor = page.records, page.cursor
            for record in chunk:
                self.history.add(record)
            changed += chunk
            spent = (time.perf_counter() - began) * 1000
            if len(chunk) < CHANGES_CHUNK or spent >= CHANGES_BUDGET_MS:
                return changed

    async def wait_newer(self, version: int, timeout: float = 15.0) -> Snapshot:
        """The first snapshot newer than `version` (or the current one after `timeout`)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.snapshot.version > version), timeout
                )
            return self.snapshot

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.watch.close()
