"""One repetition of one side: a burst phase for throughput, then a paced phase for latency.

Both sides go through this same function; only the producer, collector and worker module
differ. The order of work (and so every wait and deadline) is identical for both.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bench import raw, spectask_side
from bench.measure import BenchError, PhaseNumbers, ResultLog, now, offered_load, percentile
from bench.procs import WorkerProcess
from bench.topology import BenchTopology, bench_topology, purge, queue_depths
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


@dataclass(frozen=True)
class Settings:
    url: str
    run_id: str
    tasks: int
    workers: int
    rate: float
    seconds: float
    prefetch: int
    timeout: float


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


SIDES = {
    "raw": Side("raw", "bench.raw", _raw_producer, _raw_collector),
    "spectask": Side("spectask", "bench.spectask_side", _spectask_producer, _spectask_collector),
}


def _ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


@dataclass(frozen=True)
class Repetition:
    numbers: PhaseNumbers
    task_body: bytes
    result_bytes: int
    worker_stats: list[dict[str, Any]]


@dataclass(frozen=True)
class Burst:
    throughput: float
    submit_rate: float
    worker_cpu_ms: float
    collector_cpu_ms: float


async def _spawn_workers(side: Side, settings: Settings, repetition: int) -> list[WorkerProcess]:
    workers: list[WorkerProcess] = []
    try:
        for index in range(settings.workers):
            worker_id = f"{side.name}-{repetition + 1}-w{index + 1}"
            args = ["--run-id", settings.run_id, "--worker-id", worker_id]
            args += ["--prefetch", str(settings.prefetch), "--max-seconds", str(3 * 3600)]
            workers.append(
                await WorkerProcess.spawn(worker_id, side.worker_module, args, settings.url)
            )
        await asyncio.gather(*(worker.wait_ready(READY_SECONDS) for worker in workers))
    except BaseException:
        for worker in workers:
            await worker.kill()
        raise
    return workers


def _liveness(collector: Collector, workers: list[WorkerProcess]) -> Callable[[], None]:
    def check() -> None:
        collector.check()
        for worker in workers:
            worker.check_alive()

    return check


async def _burst(
    producer: Producer,
    log: ResultLog,
    alive: Callable[[], None],
    workers: list[WorkerProcess],
    settings: Settings,
) -> Burst:
    """Pre-load while the workers wait at the gate, then time them draining the queue."""
    burst = _ids(settings.tasks)
    started = now()
    await asyncio.wait_for(producer.preload(burst), timeout=settings.timeout)
    submit_rate = len(burst) / (now() - started)

    worker_cpu = sum(worker.cpu_seconds() for worker in workers)
    own_cpu = time.process_time()
    started = now()
    for worker in workers:
        worker.go()
    finished = await log.wait_for(burst, settings.timeout, check=alive)
    worker_cpu = sum(worker.cpu_seconds() for worker in workers) - worker_cpu
    own_cpu = time.process_time() - own_cpu
    return Burst(
        throughput=len(burst) / (finished - started),
        submit_rate=submit_rate,
        worker_cpu_ms=worker_cpu * 1000 / len(burst),
        collector_cpu_ms=own_cpu * 1000 / len(burst),
    )


async def _latencies(
    producer: Producer, log: ResultLog, alive: Callable[[], None], settings: Settings
) -> tuple[float, list[float]]:
    """Offer a fixed rate below saturation; the achieved rate and each task's latency (ms)."""
    paced = _ids(max(1, round(settings.rate * settings.seconds)))
    offered = await offered_load(producer.submit, paced, log, settings.rate, settings.timeout)
    await log.wait_for(paced, settings.timeout, check=alive)
    return offered, log.latencies_ms(paced)


async def run_repetition(side: Side, settings: Settings, repetition: int) -> Repetition:
    """One side, once: the burst phase, then the latency phase, with the same workers."""
    bench = bench_topology(settings.run_id, side.name)
    await purge(settings.url, bench.queue_names)
    log = ResultLog()
    collector = await side.start_collector(settings.url, bench, settings.prefetch, log.collected)
    producer: Producer | None = None
    workers: list[WorkerProcess] = []
    try:
        producer = await side.open_producer(settings.url, bench)
        workers = await _spawn_workers(side, settings, repetition)
        alive = _liveness(collector, workers)
        burst = await _burst(producer, log, alive, workers, settings)
        offered, latencies = await _latencies(producer, log, alive, settings)
        stats = [await worker.stop(settings.timeout) for worker in workers]
        task_body = producer.task_body()
    finally:
        for worker in workers:
            await worker.kill()
        if producer is not None:
            await producer.close()
        await collector.close(settings.timeout)
    await _check_empty(settings.url, bench)
    numbers = PhaseNumbers(
        side=side.name,
        repetition=repetition,
        throughput=burst.throughput,
        submit_rate=burst.submit_rate,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        offered_rate=offered,
        duplicates=log.duplicates,
        worker_cpu_ms=burst.worker_cpu_ms,
        collector_cpu_ms=burst.collector_cpu_ms,
    )
    return Repetition(numbers, task_body, collector.result_bytes, stats)


async def _check_empty(url: str, bench: BenchTopology) -> None:
    """Every task was processed and every result collected: nothing may be left anywhere."""
    depths = await queue_depths(url, bench.queue_names)
    left = {name: depth for name, depth in depths.items() if depth}
    if left:
        raise BenchError(f"messages left over after the run (dead letters?): {left}")


async def measure_side(side: Side, settings: Settings, repetition: int) -> Repetition:
    """`run_repetition`, with the side's name on any error."""
    try:
        return await run_repetition(side, settings, repetition)
    except (BenchError, TimeoutError) as exc:
        raise BenchError(f"{side.name}, repetition {repetition + 1}: {exc}") from exc
