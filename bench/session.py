"""One phase of one side: fresh workers, the phase's measurement, every queue empty after.

All sides go through this same code; only the producer, collector and worker module differ.
The order of work (and so every wait and deadline) is identical for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench import raw, spectask_side
from bench.dashboard_open import OpenDashboard, heartbeat_publish_cpu_seconds
from bench.measure import BenchError, ResultLog, Sample, now, offered_load, percentile
from bench.phases import (
    DASHBOARD_CPU_SHARE,
    OFFERED,
    P50,
    P99,
    RAW,
    RAW_TRANSIENT,
    RSS_END,
    RSS_GROWTH,
    RSS_START,
    RSS_WARM,
    SPECTASK,
    THROUGHPUT,
    WORKER_CPU,
    Kind,
    Phase,
)
from bench.procs import WorkerProcess, local_broker_pid, process_cpu_seconds
from bench.topology import (
    BenchTopology,
    bench_topology,
    heartbeat_senders,
    purge,
    queue_depths,
)
from spectask.runtime.config import RuntimeConfig

READY_SECONDS = 60.0
"""Python start-up, imports and connecting, on a busy 2-core machine."""


class Producer(Protocol):
    def task_body(self) -> bytes: ...
    async def preload(self, task_ids: Sequence[str]) -> None: ...
    async def submit(self, task_id: str) -> None: ...
    async def close(self) -> None: ...


class Collector(Protocol):
    result_bytes: int

    def check(self) -> None: ...

    async def close(self, timeout: float) -> None: ...


ResultCallback = Callable[[str], None]


@dataclass(frozen=True)
class Side:
    """How to build one side's producer, collector and worker processes."""

    name: str
    worker_module: str
    open_producer: Callable[[str, BenchTopology], Awaitable[Producer]]
    start_collector: Callable[[str, BenchTopology, int, ResultCallback], Awaitable[Collector]]
    worker_args: tuple[str, ...] = ()
    heartbeat_args: tuple[str, ...] = ()
    """Added in a dashboard phase: what makes this side's workers send heartbeats (if any)."""


@dataclass(frozen=True)
class Settings:
    url: str
    run_id: str
    tasks: int
    rate: float
    seconds: float
    rss_tasks: int
    prefetch: int
    timeout: float
    sample_dir: Path | None = None
    """`bench/profile.py`: py-spy samples every worker into this folder (never in `make bench`)."""
    sample_rate: int = 250


async def _raw_producer(url: str, bench: BenchTopology) -> Producer:
    return await raw.RawProducer.open(url, bench)


async def _raw_collector(
    url: str, bench: BenchTopology, prefetch: int, on_result: ResultCallback
) -> Collector:
    return await raw.RawCollector.start(url, bench, prefetch, on_result)


async def _spectask_producer(url: str, bench: BenchTopology) -> Producer:
    del url  # RuntimeConfig reads AMQP_URL, which run.py took the URL from
    return await spectask_side.SpectaskProducer.open(RuntimeConfig(), bench)


async def _spectask_collector(
    url: str, bench: BenchTopology, prefetch: int, on_result: ResultCallback
) -> Collector:
    del url
    config = RuntimeConfig(prefetch=prefetch)
    return await spectask_side.SpectaskCollector.start(config, bench, on_result)


BUILDERS = {
    RAW: Side(RAW, "bench.raw", _raw_producer, _raw_collector),
    SPECTASK: Side(
        SPECTASK,
        "bench.spectask_side",
        _spectask_producer,
        _spectask_collector,
        heartbeat_args=("--heartbeats",),
    ),
    RAW_TRANSIENT: Side(
        RAW_TRANSIENT, "bench.raw", _raw_producer, _raw_collector, worker_args=("--transient",)
    ),
}


def _ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


async def _spawn_workers(
    side: Side, phase: Phase, settings: Settings, pair: int
) -> list[WorkerProcess]:
    workers: list[WorkerProcess] = []
    try:
        for index in range(phase.workers):
            worker_id = f"{side.name}-{pair + 1}-w{index + 1}"
            args = ["--run-id", settings.run_id, "--worker-id", worker_id]
            args += ["--prefetch", str(settings.prefetch), "--max-seconds", str(3 * 3600)]
            args += ["--result-mode", phase.result_mode, *side.worker_args]
            if phase.dashboard:
                args += side.heartbeat_args
            workers.append(
                await WorkerProcess.spawn(worker_id, side.worker_module, args, settings.url)
            )
        await asyncio.gather(*(worker.wait_ready(READY_SECONDS) for worker in workers))
        if settings.sample_dir is not None:
            for worker in workers:
                path = settings.sample_dir / f"{worker.name}.txt"
                await worker.attach_sampler(path, settings.sample_rate, READY_SECONDS)
    except BaseException:
        for worker in workers:
            await worker.kill()
        raise
    return workers


def _liveness(
    collector: Collector, workers: list[WorkerProcess], dashboard: OpenDashboard | None
) -> Callable[[], None]:
    def check() -> None:
        collector.check()
        for worker in workers:
            worker.check_alive()
        if dashboard is not None:
            dashboard.check()

    return check


@dataclass(frozen=True)
class Run:
    """What a phase function gets: one side's producer, result log and released-on-demand
    workers, with the liveness check every wait runs."""

    producer: Producer
    log: ResultLog
    alive: Callable[[], None]
    workers: list[WorkerProcess]
    settings: Settings
    dashboard: OpenDashboard | None = None
    heartbeat_cpu_s: float | None = None
    """The CPU of one heartbeat publish, when this side's workers send heartbeats."""

    def go(self) -> None:
        for worker in self.workers:
            worker.go()


async def _burst(run: Run) -> dict[str, float]:
    """Pre-load while the workers wait at the gate, then time them draining the queue."""
    settings = run.settings
    burst = _ids(settings.tasks)
    started = now()
    await asyncio.wait_for(run.producer.preload(burst), timeout=settings.timeout)
    submit_rate = len(burst) / (now() - started)

    worker_cpu = sum(worker.cpu_seconds() for worker in run.workers)
    own_cpu = time.process_time()
    broker = local_broker_pid()
    broker_cpu = process_cpu_seconds(broker) if broker is not None else math.nan
    dashboard_cpu = run.dashboard.cpu_seconds() if run.dashboard else math.nan
    started = now()
    run.go()
    finished = await run.log.wait_for(burst, settings.timeout, check=run.alive)
    worker_cpu = sum(worker.cpu_seconds() for worker in run.workers) - worker_cpu
    own_cpu = time.process_time() - own_cpu
    if broker is not None:
        broker_cpu = process_cpu_seconds(broker) - broker_cpu
    values = {
        THROUGHPUT.key: len(burst) / (finished - started),
        WORKER_CPU.key: worker_cpu * 1e6 / len(burst),
        "submit_per_s": submit_rate,
        "collector_cpu_us": own_cpu * 1e6 / len(burst),
        "broker_cpu_us": broker_cpu * 1e6 / len(burst),
    }
    if run.dashboard is not None:
        dashboard_cpu = run.dashboard.cpu_seconds() - dashboard_cpu
        values |= dashboard_cost(
            dashboard_cpu, worker_cpu + own_cpu, finished - started, run, RuntimeConfig()
        )
    return values


def dashboard_cost(
    dashboard_cpu: float, pipeline_cpu: float, seconds: float, run: Run, config: RuntimeConfig
) -> dict[str, float]:
    """The dashboard's CPU share of a burst (bench.dashboard_open): its process, plus the
    heartbeats the workers sent in it (each one at start, then one every interval) times the
    CPU of one, over the CPU the workers and the collector's process used meanwhile."""
    heartbeats = 0.0
    if run.heartbeat_cpu_s is not None:
        heartbeats = len(run.workers) * (1 + seconds // config.heartbeat_interval)
    heartbeat_cpu = heartbeats * (run.heartbeat_cpu_s or 0.0)
    return {
        "dashboard_cpu_s": dashboard_cpu,
        "heartbeats": heartbeats,
        "heartbeat_cpu_s": heartbeat_cpu,
        "pipeline_cpu_s": pipeline_cpu,
        DASHBOARD_CPU_SHARE: (dashboard_cpu + heartbeat_cpu) / pipeline_cpu
        if pipeline_cpu > 0
        else math.nan,
    }


PACED_WARMUP_TASKS = 50
"""Sent and collected before the paced clock starts, so a fresh worker's first consume,
connection buffers and caches do not land in the p99 of either side."""


async def _paced(run: Run) -> dict[str, float]:
    """Offer a fixed rate below saturation; the achieved rate and p50/p99 latency (ms)."""
    settings = run.settings
    run.go()
    warmup = _ids(PACED_WARMUP_TASKS)
    await asyncio.wait_for(run.producer.preload(warmup), timeout=settings.timeout)
    await run.log.wait_for(warmup, settings.timeout, check=run.alive)
    paced = _ids(max(1, round(settings.rate * settings.seconds)))
    offered = await offered_load(
        run.producer.submit, paced, run.log, settings.rate, settings.timeout
    )
    await run.log.wait_for(paced, settings.timeout, check=run.alive)
    latencies = run.log.latencies_ms(paced)
    return {
        P50.key: percentile(latencies, 50),
        P99.key: percentile(latencies, 99),
        OFFERED.key: offered,
    }


RSS_CHUNKS = 10
"""The RSS phase feeds its tasks in tenths: the first warms up, the last shows any leak."""


def _mib(workers: list[WorkerProcess]) -> float:
    return max(worker.rss_bytes() for worker in workers) / 2**20


async def _rss(run: Run) -> dict[str, float]:
    """RSS when ready (before any task), after the first tenth of the tasks, after all of them."""
    settings = run.settings
    start = _mib(run.workers)
    run.go()
    chunk = max(1, settings.rss_tasks // RSS_CHUNKS)
    warm = math.nan
    for index in range(RSS_CHUNKS):
        ids = _ids(chunk)
        await asyncio.wait_for(run.producer.preload(ids), timeout=settings.timeout)
        await run.log.wait_for(ids, settings.timeout, check=run.alive)
        if index == 0:
            warm = _mib(run.workers)
    end = _mib(run.workers)
    return {
        RSS_START.key: start,
        RSS_WARM.key: warm,
        RSS_END.key: end,
        RSS_GROWTH.key: end - warm,
        "rss_tasks": float(chunk * RSS_CHUNKS),
    }


PHASE_FUNCTIONS: dict[Kind, Callable[[Run], Awaitable[dict[str, float]]]] = {
    "burst": _burst,
    "paced": _paced,
    "rss": _rss,
}


async def run_phase(side: Side, phase: Phase, settings: Settings, pair: int) -> Sample:
    """One side, one phase, on fresh worker processes; every queue is empty at the end."""
    bench = bench_topology(settings.run_id, side.name)
    await purge(settings.url, bench.queue_names)
    log = ResultLog()
    collector = await side.start_collector(settings.url, bench, settings.prefetch, log.collected)
    producer: Producer | None = None
    workers: list[WorkerProcess] = []
    async with contextlib.AsyncExitStack() as stack:
        dashboard = None
        try:
            heartbeat_cpu = None
            if phase.dashboard and side.heartbeat_args:  # before the dashboard and workers
                heartbeat_cpu = await heartbeat_publish_cpu_seconds(bench)
            if phase.dashboard:  # opened before the workers, closed after them (every side)
                dashboard = await stack.enter_async_context(OpenDashboard(settings.url))
            producer = await side.open_producer(settings.url, bench)
            workers = await _spawn_workers(side, phase, settings, pair)
            alive = _liveness(collector, workers, dashboard)
            run = Run(producer, log, alive, workers, settings, dashboard, heartbeat_cpu)
            values = await PHASE_FUNCTIONS[phase.kind](run)
            if phase.dashboard and side.heartbeat_args:
                await _check_heartbeats(settings, bench, workers)
            stats = [await worker.stop(settings.timeout) for worker in workers]
            task_body = producer.task_body()
        finally:
            for worker in workers:
                await worker.kill()
            if producer is not None:
                await producer.close()
            await collector.close(settings.timeout)
    if dashboard is not None:
        values["dashboard_snapshots"] = float(dashboard.snapshots)
    await _check_empty(settings.url, bench)
    metric_keys = {metric.key for metric in phase.metrics}
    return Sample(
        phase=phase.name,
        side=side.name,
        pair=pair,
        values={key: value for key, value in values.items() if key in metric_keys},
        extra={
            **{key: value for key, value in values.items() if key not in metric_keys},
            "duplicates": log.duplicates,
            "task_bytes": len(task_body),
            "task_body": task_body.decode(),
            "result_bytes": collector.result_bytes,
            "workers": stats,
        },
    )


async def _check_heartbeats(
    settings: Settings, bench: BenchTopology, workers: list[WorkerProcess]
) -> None:
    """The dashboard phase really had heartbeats: one from every worker in the run's stream."""
    names = {worker.name for worker in workers}
    seen = await heartbeat_senders(settings.url, bench.heartbeat_queue, names, settings.timeout)
    if seen < len(names):
        raise BenchError(
            f"only {seen} of {len(names)} workers sent a heartbeat within {settings.timeout:g}s"
        )


async def _check_empty(url: str, bench: BenchTopology) -> None:
    """Every task was processed and every result collected: nothing may be left anywhere."""
    depths = await queue_depths(url, bench.queue_names)
    left = {name: depth for name, depth in depths.items() if depth}
    if left:
        raise BenchError(f"messages left over after the run (dead letters?): {left}")


async def measure(side: Side, phase: Phase, settings: Settings, pair: int) -> Sample:
    """`run_phase`, with the side, phase and pair on any error."""
    try:
        return await run_phase(side, phase, settings, pair)
    except (BenchError, TimeoutError) as exc:
        raise BenchError(f"{side.name}, {phase.name}, pair {pair + 1}: {exc}") from exc
