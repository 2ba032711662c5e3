"""A worker's own Prometheus /metrics (SPECTASK_METRICS_PORT; off when unset).

What the worker knows and no store does: attempts processed per message type, outcomes
(succeeded, failed, retried, dead-lettered, cancelled, requeued), what it holds in flight, its
prefetch and concurrency. The numbers are read from the worker's `WorkerStats` at scrape time,
so the delivery path does no extra work for them. The handler-duration histogram is the one
thing observed per task (`WorkerStats.observe_duration`, one labelled child per message type,
made once): about a microsecond, and nothing at all when metrics are off. prometheus-client
comes with the `dashboard` extra; asking for metrics without it is a one-line error at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

from spectask.errors import ConfigError
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.consumer import WorkerStats

log = logging.getLogger("spectask.worker")

OUTCOMES = ("succeeded", "failed", "retried", "dead_lettered", "cancelled", "requeued")
# seconds: from quick async handlers to the image and report tasks' tens of seconds
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class WorkerMetrics:
    """A Resource of the delivery loop: serves /metrics from start to close."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        worker_id: str,
        stats: WorkerStats,
        in_flight: Callable[[], int],
    ) -> None:
        self._config = config
        self._worker_id = worker_id
        self._stats = stats
        self._in_flight = in_flight
        self._server: Any = None

    async def start(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Histogram, start_http_server
        except ModuleNotFoundError:
            raise ConfigError(
                "SPECTASK_METRICS_PORT needs prometheus-client: pip install 'spectask[dashboard]'"
            ) from None
        registry = CollectorRegistry()
        registry.register(self)
        durations = Histogram(
            "spectask_worker_handler_duration_seconds",
            "How long this worker's attempts ran, start to result, by message type",
            labelnames=["worker_id", "task_type", "operation"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        children: dict[str, Any] = {}

        def observe(message_type: str, seconds: float) -> None:
            child = children.get(message_type)
            if child is None:
                task_type, _, operation = message_type.partition(".")
                child = children[message_type] = durations.labels(
                    self._worker_id, task_type, operation
                )
            child.observe(seconds)

        port = self._config.metrics_port
        assert port is not None
        try:
            self._server, _ = start_http_server(port, self._config.metrics_host, registry)
        except OSError as exc:
            raise ConfigError(
                f"worker {self._worker_id}: cannot serve /metrics on "
                f"{self._config.metrics_host}:{port} ({exc.strerror}); choose another "
                "SPECTASK_METRICS_PORT"
            ) from None
        self._stats.observe_duration = observe
        log.info("worker %s: /metrics on %s:%d", self._worker_id, self._config.metrics_host, port)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        worker = ["worker_id"]
        processed = CounterMetricFamily(
            "spectask_worker_processed",
            "Attempts this worker finished, by message type",
            labels=[*worker, "task_type", "operation"],
        )
        for message_type, count in sorted(self._stats.by_type.items()):
            task_type, _, operation = message_type.partition(".")
            processed.add_metric([self._worker_id, task_type, operation], count)
        yield processed
        outcomes = CounterMetricFamily(
            "spectask_worker_outcomes",
            "Outcomes of this worker's attempts",
            labels=[*worker, "outcome"],
        )
        for outcome in OUTCOMES:
            outcomes.add_metric([self._worker_id, outcome], getattr(self._stats, outcome))
        yield outcomes
        for name, help_text, value in (
            ("spectask_worker_in_flight", "Deliveries held now", self._in_flight()),
            ("spectask_worker_prefetch", "Unacked deliveries per consumer", self._config.prefetch),
            ("spectask_worker_concurrency", "Handlers at once", self._config.concurrency),
        ):
            gauge = GaugeMetricFamily(name, help_text, labels=worker)
            gauge.add_metric([self._worker_id], value)
            yield gauge

    async def close(self) -> None:
        self._stats.observe_duration = None
        if self._server is not None:
            await asyncio.to_thread(self._server.shutdown)  # waits out its poll, off the loop
            self._server.server_close()
