"""What a chaos batch observes: handler executions, stored results, and the store's records.

- `executions(path)`: the chaos app's execution log (tests/chaos/app.py), runs per task id.
- `ResultTail`: follows the collector's `--output` file (one line per result it stored, after
  the commit), stamping each line with the time it appeared; this is what *recovery* is
  measured on: fault -> the first result, of a handler run that finished after the fault,
  committed to the store (or, when every run had finished before the fault, the first
  result committed after it).
- `StoreWatcher`: reads every record of the store twice a second through the store's own API
  and remembers, per task, the first final record it saw. A later read that is not final is
  a task that *moved backwards*; a later final read whose outcome (state, the time that
  decided it, the result) differs is a *duplicate result*: a second outcome replaced the
  first. Both fail the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from spectask.protocol.names import FINAL_STATES
from spectask.store import TaskRecord, TaskState, open_store

POLL = 0.05
STORE_POLL = 0.5
ALL_RECORDS = 10**7


def executions(path: Path) -> Counter[str]:
    """Finished handler runs per task id."""
    runs: Counter[str] = Counter()
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            if line.strip():
                runs[line.split()[0]] += 1
    return runs


def execution_count(path: Path) -> int:
    try:
        with path.open("rb") as file:
            return sum(1 for _ in file)
    except FileNotFoundError:
        return 0


class ResultTail:
    """The collector's stored results, each with the wall time it was seen committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # (seen at, task id, finished at, where the line starts in the file)
        self.seen: list[tuple[float, str, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True, name="result-tail")

    def start(self) -> ResultTail:
        self._thread.start()
        return self

    def _follow(self) -> None:
        offset = 0
        partial = b""
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError), self.path.open("rb") as file:
                file.seek(offset)
                chunk = file.read()
                now = time.time()
                start = offset - len(partial)
                *lines, partial = (partial + chunk).split(b"\n")
                offset += len(chunk)
                for line in lines:
                    self._add(now, line, start)
                    start += len(line) + 1
            self._stop.wait(POLL)

    def size(self) -> int:
        """Bytes stored so far: a result whose line starts at or beyond was stored after now."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _add(self, now: float, line: bytes, offset: int) -> None:
        """One stored result; a line torn by a collector's kill -9 is skipped (the next
        collector appends after it, so its own line starts at the last `{`)."""
        start = line.rfind(b'{"task_id"')
        try:
            document = json.loads(line[max(start, 0) :])
        except ValueError:
            return
        finished = datetime.fromisoformat(document["finished_at"]).timestamp()
        self.seen.append((now, document["task_id"], finished, offset + max(start, 0)))

    def recovery(self, fault_at: float, stored_before: int) -> float | None:
        """Seconds from `fault_at` to the first result stored after the fault (its line past
        `stored_before`, the file's size then) of a run that finished after the fault.

        When every run had finished before the fault (a collector killed while it still had
        a backlog of results to store), to the first result stored after the fault instead.
        """
        later = [(at, finished) for at, _, finished, start in self.seen if start >= stored_before]
        after = [at for at, finished in later if finished > fault_at] or [at for at, _ in later]
        return min(after) - fault_at if after else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass
class StoreView:
    """What the watcher saw: first final outcome per task, and every violation."""

    first_final: dict[str, tuple[TaskState, Any, Any]] = field(default_factory=dict)
    backwards: dict[str, str] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)
    records: dict[str, TaskRecord] = field(default_factory=dict)
    reads: int = 0
    errors: list[str] = field(default_factory=list)


def outcome(record: TaskRecord) -> tuple[TaskState, Any, Any]:
    return (record.state, record.state_at, record.result)


class StoreWatcher:
    """Polls a task store (STORE_URL) on a thread of its own; see the module docstring."""

    def __init__(self, store_url: str) -> None:
        self.store_url = store_url
        self.view = StoreView()
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True, name="store-watcher")

    def start(self) -> StoreWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        asyncio.run(self._watch())

    async def _watch(self) -> None:
        store = None
        while not self._stop.is_set():
            try:
                if store is None:
                    store = await open_store(self.store_url)
                self._observe(await store.list(limit=ALL_RECORDS))
            except Exception as exc:  # the store may not exist yet; say what, keep watching
                self.view.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(STORE_POLL)
        if store is not None:
            self._observe(await store.list(limit=ALL_RECORDS))  # the final read
            await store.close()

    def _observe(self, records: list[TaskRecord]) -> None:
        view = self.view
        for record in records:
            first = view.first_final.get(record.task_id)
            if first is None:
                if record.state in FINAL_STATES:
                    view.first_final[record.task_id] = outcome(record)
            elif record.state not in FINAL_STATES:
                view.backwards.setdefault(record.task_id, f"{first[0].value} -> {record.state}")
            elif outcome(record) != first:
                view.replaced.setdefault(record.task_id, f"{first} -> {outcome(record)}")
        with self._changed:
            view.records = {record.task_id: record for record in records}
            view.reads += 1
            self._changed.notify_all()

    def wait_succeeded(self, task_ids: set[str], timeout: float) -> set[str]:
        """Wait until every id is SUCCEEDED in the store; the ids that are not by the deadline."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                records = self.view.records
                missing = {
                    task_id
                    for task_id in task_ids
                    if (found := records.get(task_id)) is None
                    or found.state is not TaskState.SUCCEEDED
                }
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                self._changed.wait(min(left, 1.0))

    def close(self) -> StoreView:
        self._stop.set()
        self._thread.join(30)
        return self.view
