"""Clocks, counters and statistics shared by both sides, so both are measured the same way.

Submit and arrival times are taken in the bench process (the producer and the collector both
live there), on one monotonic clock, so a latency never mixes the clocks of two processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CHECK_SECONDS = 1.0


class BenchError(Exception):
    """The run cannot give a valid number (lost tasks, a timeout, a worker that died)."""


def now() -> float:
    return time.perf_counter()


class ResultLog:
    """When each task was submitted and when its result reached the collector, by task id.

    Collectors call `collected` for every result they receive; a second result for the same
    task (a redelivery) counts as a duplicate and keeps the first arrival time.
    """

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.arrived: dict[str, float] = {}
        self.duplicates = 0
        self._pending: set[str] = set()
        self._all_in = asyncio.Event()

    def submitted(self, task_id: str) -> None:
        self.sent[task_id] = now()

    def collected(self, task_id: str) -> None:
        if task_id in self.arrived:
            self.duplicates += 1
            return
        self.arrived[task_id] = now()
        self._pending.discard(task_id)
        if not self._pending:
            self._all_in.set()

    async def wait_for(
        self, task_ids: Iterable[str], timeout: float, check: Callable[[], None] | None = None
    ) -> float:
        """Wait until every task has a result; the arrival time of the last one.

        `check` runs every `CHECK_SECONDS` and may raise, so a dead worker or collector fails
        the run at once instead of at the deadline.
        """
        ids = list(task_ids)
        self._pending = set(ids) - self.arrived.keys()
        self._all_in.clear()
        deadline = now() + timeout
        while self._pending:
            if check is not None:
                check()
            remaining = deadline - now()
            if remaining <= 0:
                raise BenchError(
                    f"{len(self._pending)} of {len(ids)} tasks got no result within "
                    f"{timeout:g}s (lost, or the workers are stuck)"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_in.wait(), timeout=min(remaining, CHECK_SECONDS))
        return max(self.arrived[task_id] for task_id in ids)

    def latencies_ms(self, task_ids: Iterable[str]) -> list[float]:
        return [(self.arrived[i] - self.sent[i]) * 1000 for i in task_ids]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank: an observed value, never an interpolation."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return statistics.median(finite) if finite else math.nan


async def offered_load(
    submit: Callable[[str], Coroutine[Any, Any, None]],
    task_ids: Sequence[str],
    log: ResultLog,
    rate: float,
    confirm_timeout: float,
) -> float:
    """Submit the tasks on a fixed schedule (open loop) and return the achieved rate.

    Each submit runs as its own task, so a slow confirm delays neither the schedule nor the
    next submit; the submit time is taken before the message is even built, so serialization
    and validation count toward latency on both sides.
    """
    tasks: list[asyncio.Task[None]] = []
    started = now()
    for index, task_id in enumerate(task_ids):
        delay = started + index / rate - now()
        if delay > 0:
            await asyncio.sleep(delay)
        log.submitted(task_id)
        tasks.append(asyncio.create_task(submit(task_id)))
    elapsed = now() - started
    _, late = await asyncio.wait(tasks, timeout=confirm_timeout)
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late, timeout=confirm_timeout)
        raise BenchError(f"{len(late)} submits not confirmed within {confirm_timeout:g}s")
    failures = [task.exception() for task in tasks if task.exception() is not None]
    if failures:
        raise BenchError(f"{len(failures)} submits failed; first: {failures[0]}")
    return len(task_ids) / elapsed if elapsed > 0 else math.inf


@dataclass(frozen=True)
class Sample:
    """One side's numbers from one phase of one pair (`values` keyed by `Metric.key`).

    CPU per task covers the burst (from the release of the workers to the last result) and
    sums all worker processes of the side; `extra` holds what the JSON keeps but the table
    does not show (submit rate, the bench process's CPU, duplicates, per-worker stats).
    """

    phase: str
    side: str
    pair: int
    values: dict[str, float]
    extra: dict[str, Any]
