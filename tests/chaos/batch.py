"""One chaos batch: a collector, workers and the producer on a throwaway node, then the verdict.

`Batch` starts the real processes (tests/chaos/processes.py), lets the test inject its faults
while the batch is live (`wait_executed`, `fault`), and `finish()` turns what happened into a
table row (tests/chaos/table.py):

- confirmed: the ids the producer wrote to --ids-file (the broker confirmed them);
- succeeded: confirmed ids SUCCEEDED in the collector's store; lost: the others, after every
  queue has drained (or the deadline passed);
- duplicate executions: finished handler runs beyond the first, per confirmed id (the chaos
  app's execution log) — printed, not failed: at-least-once delivery allows them;
- duplicate results / moved backwards: see tests/chaos/observe.py (StoreWatcher) — failed;
- recovery s: for each fault, the time until the collector stored the result of a handler run
  that finished after the fault (ResultTail.recovery); the row shows the worst of its faults;
- drain s: from the first fault until the last confirmed task was stored;
- slowest exit s: the longest a process took to exit after SIGTERM (every SIGTERM of the row);
- unsettled: once everything is stopped (SIGTERM; each process must exit 0 within its
  shutdown timeout, its handler processes with it), every queue but the cancellation stream
  must be empty: a delivery left unacked by a consumer is back in its queue by then.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from generated.topology import TOPOLOGY
from spectask import dlq
from spectask.devbroker import LocalNode
from spectask.devbroker.cluster import LocalCluster
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from tests.chaos.observe import ResultTail, StoreWatcher, execution_count, executions
from tests.chaos.processes import CHAOS_APP, REAL_APP, Exit, Service, stop_all
from tests.chaos.proxy import TcpProxy
from tests.chaos.table import Row
from tests.workqueue_support import queue_depth, reset_topology

SHUTDOWN_TIMEOUT = 10.0
MAX_MESSAGE_BYTES = 262_144  # small, so the storm's oversized bodies stay cheap for the broker
WORKERS = 3
DRAIN_TIMEOUT = 240.0
STREAM = "stream"


DEAD_LETTER_QUEUE = "dead_letter"
# "task 1f3e...: ack lost (...)" -> "task: ack lost": a warning's kind, without its ids and numbers
_WARNING = re.compile(r"\b(WARNING|ERROR)\b\s*(?:\S+:)?\s*(.*)")
_IDS = re.compile(r"\S*\d\S*")


def warning_lines(log: str) -> Counter[str]:
    """A process log's WARNING and ERROR lines, counted by kind (ids and numbers masked)."""
    kinds: Counter[str] = Counter()
    for line in log.splitlines():
        if found := _WARNING.search(line):
            kinds[f"{found[1]} {_IDS.sub('#', found[2])[:90]}"] += 1
    return kinds


def checked_queues() -> list[str]:
    """Every queue of the topology that must end empty (a stream keeps what it got)."""
    return [
        queue.name
        for queue in TOPOLOGY.queues
        if dict(queue.arguments).get("x-queue-type") != STREAM
    ]


async def depths(url: str, names: list[str]) -> dict[str, int]:
    return {name: await queue_depth(url, name) for name in names}


@dataclass
class Fault:
    """When a fault was injected, and how much of the result file was stored before it."""

    label: str
    at: float
    stored_before: int


@dataclass
class Batch:
    """A live batch of `tasks` statistics tasks; see the module docstring."""

    node: LocalNode | LocalCluster  # a cluster: every process gets its nodes' URLs
    base: Path
    name: str
    store_url: str
    tasks: int
    proxy: TcpProxy | None = None  # workers and the collector connect through it when given
    # settings every process gets (SPECTASK_QUEUE_TYPE=quorum, ...); the topology is reset
    # with `config`, which must agree with them
    settings: dict[str, str] = field(default_factory=dict)
    config: RuntimeConfig | None = None
    faults: list[Fault] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir = self.base / self.name
        self.dir.mkdir(parents=True)
        self.exec_log = self.dir / "executions.log"
        self.results = self.dir / "results.jsonl"
        self.ids_file = self.dir / "confirmed.ids"
        service_url = self.proxy.url() if self.proxy else self.node.url
        env = {
            **os.environ,
            "AMQP_URL": service_url,
            "STORE_URL": self.store_url,
            "CHAOS_EXECUTION_LOG": str(self.exec_log),
            "SPECTASK_PREFETCH": "16",
            "SPECTASK_CONCURRENCY": "2",
            "SPECTASK_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
            "SPECTASK_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
            "SPECTASK_OUTPUT_DIR": str(self.dir / "out"),
            "PYTHONUNBUFFERED": "1",
            **self.settings,
        }
        collect = ["collect", "--app", REAL_APP, "--quiet", "--output", str(self.results)]
        self.collector = Service("collector", collect, env, self.dir, SHUTDOWN_TIMEOUT)
        self.workers = [
            Service(
                f"w{index}",
                ["worker", f"w{index}", "--app", CHAOS_APP, "--types", "data_analysis"],
                env,
                self.dir,
                SHUTDOWN_TIMEOUT,
            )
            for index in range(1, WORKERS + 1)
        ]
        produce = ["produce", "--app", CHAOS_APP, "--count", str(self.tasks)]
        produce += ["--batch", self.name, "--ids-file", str(self.ids_file)]
        self.producer = Service(
            "producer", produce, {**env, "AMQP_URL": self.node.url}, self.dir, SHUTDOWN_TIMEOUT
        )
        self.tail = ResultTail(self.results)
        self.watcher = StoreWatcher(self.store_url)

    # -- running ------------------------------------------------------------------------------

    def start(self) -> Batch:
        """A fresh topology, the collector and workers consuming, then the producer."""
        self.reset()
        self.start_services()
        self.producer.start()
        return self

    def reset(self) -> None:
        asyncio.run(reset_topology(self.node.url, self.config))

    def start_services(self) -> None:
        self.collector.start()
        for worker in self.workers:
            worker.start()
        self.wait_consuming(self.collector, *self.workers)
        self.tail.start()
        self.watcher.start()

    @staticmethod
    def wait_consuming(*services: Service) -> None:
        for service in services:
            service.wait_log(" consuming ")

    def executed(self) -> int:
        return execution_count(self.exec_log)

    def wait_executed(self, fraction: float, timeout: float = 120.0) -> None:
        """Wait until handlers have finished `fraction` of the batch (the fault's trigger)."""
        wanted = int(self.tasks * fraction)
        deadline = time.monotonic() + timeout
        while self.executed() < wanted:
            assert time.monotonic() < deadline, f"{self.executed()} of {wanted} runs in {timeout}s"
            time.sleep(0.02)

    def wait_produced(self, timeout: float = 120.0) -> int:
        """Wait for the producer's exit; its exit code."""
        assert self.producer.process is not None
        return self.producer.process.wait(timeout)

    def fault(self, label: str) -> Fault:
        """Mark the moment of a fault (call it right before injecting it)."""
        fault = Fault(label, time.time(), self.tail.size())
        self.faults.append(fault)
        return fault

    def kill9(self, service: Service) -> None:
        fault = self.fault(f"kill -9 {service.name}")
        left = service.kill9()
        fault.stored_before = self.tail.size()  # what a killed collector stored is before it
        if left:
            self.notes.append(f"{service.name}'s handler processes {sorted(left)} outlived it")

    # -- the verdict --------------------------------------------------------------------------

    def finish(
        self,
        fault: str,
        *,
        producer_ok: bool = True,
        settle: Callable[[set[str]], list[str]] | None = None,
    ) -> Row:
        """Drain, stop everything, check the queues and the store; the row (see module doc).

        `settle(confirmed)`, if given, runs once the confirmed tasks are stored and before the
        queues must be empty: it takes what the test expects to stay behind (dead letters)
        and returns what it found wrong.
        """
        row = Row(fault)
        failures = row.failures
        code = self.wait_produced()
        if producer_ok and code != 0:
            failures.append(f"producer exited {code}")
        confirmed = set(self.ids_file.read_text().split()) if self.ids_file.exists() else set()
        row.confirmed = len(confirmed)
        missing = self.watcher.wait_succeeded(confirmed, DRAIN_TIMEOUT)
        if settle is not None:
            failures.extend(settle(confirmed))
        queues = checked_queues()
        left = self._wait_drained(queues, timeout=60.0)
        # A process restarted after its fault may still be starting; SIGTERM before it has
        # installed its handlers is the default death (exit -15), which is no shutdown to judge.
        running = [
            s for s in (*self.workers, self.collector) if s.process and s.process.poll() is None
        ]
        self.wait_consuming(*running)
        self.exits.extend(stop_all([*self.workers, self.collector]))
        view = self.watcher.close()
        self.tail.close()
        after_stop = asyncio.run(depths(self.node.url, queues))
        row.succeeded = len(confirmed) - len(missing)
        row.lost = len(missing)
        runs = executions(self.exec_log)
        row.duplicate_executions = sum(max(0, runs[task_id] - 1) for task_id in confirmed)
        row.duplicate_results = len(view.replaced)
        row.recovery = self._recovery()
        row.drain = self._drain(confirmed)
        if missing:
            failures.append(f"lost {len(missing)}, e.g. {sorted(missing)[:3]}")
        if view.replaced:
            failures.append(f"results replaced: {list(view.replaced.items())[:2]}")
        if view.backwards:
            failures.append(f"moved backwards: {list(view.backwards.items())[:2]}")
        if view.reads == 0:
            failures.append(f"the store was never read: {view.errors[-1:]}")
        if left:
            failures.append(f"queues not drained: {left}")
        unsettled = {name: count for name, count in after_stop.items() if count}
        if unsettled:
            failures.append(f"unsettled after stop: {unsettled}")
        row.slowest_exit = max((exit.seconds for exit in self.exits), default=None)
        failures.extend(f for exit in self.exits if (f := exit.failure) is not None)
        failures.extend(self.notes)
        if failures:
            failures.append(self.diagnosis())
        return row

    def diagnosis(self) -> str:
        """What a failed row needs to be explained once its tmp dir is gone (CI keeps only the
        output): the dead letters left behind by reason, and each process's warnings."""
        config = self.config or RuntimeConfig(amqp_url=self.node.url)

        async def reasons() -> Counter[str]:
            async with await Broker.connect(config) as broker:
                views = await dlq.list_dead_letters(broker, config.naming.name(DEAD_LETTER_QUEUE))
            return Counter(f"{view.reason}: {view.error[:80]}" for view in views)

        try:
            dead = dict(asyncio.run(reasons()))
        except Exception as exc:  # a diagnosis must never hide the row's own failures
            dead = {f"could not read the dead letters: {exc}": 1}
        warnings = {
            service.name: dict(warning_lines(service.log()).most_common(4))
            for service in (*self.workers, self.collector)
            if service.log_path.exists()
        }
        return f"diagnosis: dead letters {dead}; warnings {warnings}"

    def _wait_drained(self, queues: list[str], timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            counts = asyncio.run(depths(self.node.url, queues))
            left = {name: count for name, count in counts.items() if count}
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def _recovery(self) -> float | None:
        times = [self.tail.recovery(f.at, f.stored_before) for f in self.faults]
        if not times:
            return None
        if None in times:
            return float("inf")
        return max(t for t in times if t is not None)

    def _drain(self, confirmed: set[str]) -> float | None:
        if not self.faults:
            return None
        first_seen: dict[str, float] = {}
        for seen, task_id, _, _ in self.tail.seen:
            first_seen.setdefault(task_id, seen)
        stored = [first_seen[task_id] for task_id in confirmed if task_id in first_seen]
        return max(stored) - self.faults[0].at if stored else None

    def close(self) -> None:
        """Whatever happened: no process of this batch outlives it."""
        stop_all([*self.workers, self.collector, self.producer])
        self.watcher.close()
        self.tail.close()
