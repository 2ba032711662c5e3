"""A worker's own Prometheus /metrics and /healthz (SPECTASK_METRICS_PORT; off when unset).

What the worker knows and no store does: attempts processed per message type, outcomes
(succeeded, failed, retried, dead-lettered, cancelled, requeued), what it holds in flight, its
prefetch and concurrency. The numbers are read from the worker's `WorkerStats` at scrape time,
so the delivery path does no extra work for them. The handler-duration histogram is the one
thing observed per task (`WorkerStats.observe_duration`, one labelled child per message type,
made once): about a microsecond, and nothing at all when metrics are off. prometheus-client
comes with the `dashboard` extra; asking for metrics without it is a one-line error at start.

The server runs in its own thread, so /metrics answers even when the event loop is stuck; a
liveness probe needs more than that. /healthz asks the loop itself: 200 once the loop has run
a no-op within LIVENESS_TIMEOUT seconds, else 503 with the reason (a container runtime then
restarts the worker; its deliveries go back to the queue).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from spectask.errors import ConfigError
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.consumer import WorkerStats

log = logging.getLogger(__name__)

OUTCOMES = ("succeeded", "failed", "retried", "dead_lettered", "cancelled", "requeued")
HEALTH_PATH = "/healthz"
LIVENESS_TIMEOUT = 2.0  # seconds the event loop may take to run a no-op


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass


async def _noop() -> None:
    return None


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
        self._server: WSGIServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
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

        metrics = make_wsgi_app(registry)
        self._loop = asyncio.get_running_loop()
        port = self._config.metrics_port
        assert port is not None
        host = self._config.metrics_host
        server_class = _IPv6Server if ":" in host else _Server

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == HEALTH_PATH:
                return self._health(start_response)
            return metrics(environ, start_response)  # type: ignore[no-any-return]

        try:
            self._server = make_server(host, port, app, server_class, _QuietHandler)
        except OSError as exc:
            raise ConfigError(
                f"worker {self._worker_id}: cannot serve /metrics on "
                f"{self._config.metrics_host}:{port} ({exc.strerror}); choose another "
                "SPECTASK_METRICS_PORT"
            ) from None
        self._stats.observe_duration = observe
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()
        log.info("worker %s: /metrics on %s:%d", self._worker_id, self._config.metrics_host, port)

    def _health(self, start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Runs in the server's thread: does the event loop still run what it is given?"""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(_noop(), self._loop)
        try:
            future.result(timeout=LIVENESS_TIMEOUT)
            status, body = "200 OK", "ok\n"
        except (concurrent.futures.TimeoutError, RuntimeError):
            future.cancel()
            status = "503 Service Unavailable"
            body = f"worker {self._worker_id}: event loop did not answer in {LIVENESS_TIMEOUT}s\n"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body.encode()]

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
