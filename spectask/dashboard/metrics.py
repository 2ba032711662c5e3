"""Prometheus metrics of the dashboard, from the same snapshot the page shows.

- `spectask_tasks{task_type,operation,state}` (gauge): tasks in each state now;
- `spectask_tasks_total{task_type,operation,state}` (counter): tasks that reached each final
  state (final states never change, so these only grow while the store keeps its rows);
- `spectask_task_latency_seconds{task_type}` (histogram): submit-to-finish of each task this
  dashboard saw finish since it started (each process counts its own; Prometheus sums them);
- `spectask_queue_messages{queue,kind,source}`, `spectask_queue_unacked`,
  `spectask_queue_consumers` (gauges), `spectask_workers{state}` (online or lost).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from spectask.protocol.names import FINAL_STATES
from spectask.store.records import TaskRecord

if TYPE_CHECKING:
    from spectask.dashboard.live import Live

FINAL = {state.value.lower() for state in FINAL_STATES}
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


def split_type(message_type: str) -> tuple[str, str]:
    """`image_processing.resize` -> (`image_processing`, `resize`); unknown -> ('', '')."""
    task_type, _, operation = message_type.partition(".")
    return task_type, operation


class SnapshotCollector(Collector):
    """Reads the Live snapshot at scrape time (no store query of its own)."""

    def __init__(self, live: Live) -> None:
        self._live = live

    def collect(self) -> Iterator[Metric]:
        snapshot = self._live.snapshot
        labels = ["task_type", "operation", "state"]
        now = GaugeMetricFamily("spectask_tasks", "Tasks in each state in the store", labels=labels)
        final = CounterMetricFamily(
            "spectask_tasks", "Tasks that reached each final state", labels=labels
        )
        for message_type, per_state in snapshot.counts.items():
            task_type, operation = split_type(message_type)
            for state, count in per_state.items():
                now.add_metric([task_type, operation, state], count)
                if state in FINAL:
                    final.add_metric([task_type, operation, state], count)
        yield now
        yield final
        queues = snapshot.queues
        source = str(queues.get("source", ""))
        q_labels = ["queue", "kind", "source"]
        ready = GaugeMetricFamily("spectask_queue_messages", "Messages ready", labels=q_labels)
        unacked = GaugeMetricFamily(
            "spectask_queue_unacked", "Messages delivered, not yet acked", labels=q_labels
        )
        consumers = GaugeMetricFamily("spectask_queue_consumers", "Consumers", labels=q_labels)
        for queue in queues.get("queues", []):
            values = [queue["name"], queue["kind"], source]
            if queue.get("ready") is not None:
                ready.add_metric(values, queue["ready"])
            if queue.get("unacked") is not None:
                unacked.add_metric(values, queue["unacked"])
            if queue.get("consumers") is not None:
                consumers.add_metric(values, queue["consumers"])
        yield ready
        yield unacked
        yield consumers
        workers = GaugeMetricFamily(
            "spectask_workers", "Workers by heartbeat state", labels=["state"]
        )
        states = [worker["state"] for worker in snapshot.workers]
        for state in ("online", "lost"):
            workers.add_metric([state], states.count(state))
        yield workers


class DashboardMetrics:
    """The dashboard's own registry (not the global one: tests run several dashboards)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "spectask_task_latency_seconds",
            "Submit-to-finish time of the tasks this dashboard saw finish",
            ["task_type"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, record: TaskRecord, latency: float | None) -> None:
        if latency is not None:
            self.latency.labels(split_type(record.message_type or "")[0]).observe(latency)

    def watch(self, live: Live) -> None:
        self.registry.register(SnapshotCollector(live))
