"""Throughput against the number of worker processes, on one node and on a 3-node cluster.

`make bench-scaling` (ARGS=--quick for a smoke run). For each broker (the machine's node at
AMQP_URL with classic queues; a local 3-node cluster of `LocalCluster` with quorum queues, the
cluster mode of the README), each handler and each worker count (1, 2, 4, 8 processes) it
pre-loads the tasks while the workers wait at a gate, releases them, and times the queue
draining until the last result reaches the collector. Two handlers bound the range a real task
type lives in:

- `cpu`: ~3 ms of pure-Python arithmetic per task (sync, in a thread: the GIL makes a worker
  process worth at most one core, which is why spectask scales by processes);
- `io`: a 20 ms `asyncio.sleep` per task (a remote call); an async handler runs on the event
  loop, up to SPECTASK_PREFETCH (32) at once per process (SPECTASK_CONCURRENCY bounds threads
  and processes, not coroutines), so one process could reach 1,600 tasks/s on the handler alone.

The pipeline is `bench.topology`'s renamed copy of the spec's round trip (submit, process,
result, collect), so nothing of another user's queues is touched and all is deleted at the end.
Run as `python -m bench.scaling --worker ...` it is one worker process.

What a 2-core machine can show: where the broker and the collector saturate two cores, and how
many processes an I/O-bound type needs before the broker, not the handler, is the limit. What it
cannot: CPU-bound speed-up beyond 2 processes (more processes only share the same two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import BenchError, ResultLog
from bench.phases import SPECTASK
from bench.procs import Control, WorkerProcess
from bench.spectask_side import SpectaskCollector, SpectaskProducer, serve
from bench.topology import bench_topology, delete
from bench.workload import summarize
from spectask import eventloop
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext

ROOT = Path(__file__).resolve().parents[1]
WORKER_COUNTS = (1, 2, 4, 8)
HANDLERS = ("cpu", "io")
TASKS = 2000
QUICK_TASKS = 200
CPU_LOOPS = 10_000
"""Iterations of the CPU handler's loop: about 3 ms of one core here."""
IO_SECONDS = 0.02
SETTINGS: dict[str, dict[str, str]] = {
    # per handler: how a worker process runs it (SPECTASK_* variables)
    "cpu": {"SPECTASK_ISOLATION": "thread", "SPECTASK_CONCURRENCY": "1"},
    "io": {},
}
CLUSTER_SETTINGS = {"SPECTASK_QUEUE_TYPE": "quorum", "SPECTASK_QUORUM_WITHOUT_PRIORITIES": "true"}
READY_SECONDS = 60.0
TIMEOUT_SECONDS = 600.0
CHART = ROOT / "docs" / "scaling.svg"


def cpu_work(payload: Any, context: TaskContext) -> dict[str, Any]:
    """The CPU-bound handler: arithmetic that holds the GIL for about 3 ms."""
    total = 0
    for i in range(CPU_LOOPS):
        total += (i * i) % 7
    return {**summarize(payload.values), "count": total % 2 + len(payload.values)}


async def io_work(payload: Any, context: TaskContext) -> dict[str, Any]:
    """The I/O-bound handler: waits as a call to another service would."""
    await asyncio.sleep(IO_SECONDS)
    return summarize(payload.values)


async def _worker(args: argparse.Namespace) -> int:
    # the cluster's "quorum queues without priorities" warning, once per worker: known here
    logging.getLogger("spectask.runtime.broker").setLevel(logging.ERROR)
    control = await Control.open()
    bench = bench_topology(args.run_id, SPECTASK)
    broker = await Broker.connect(RuntimeConfig(), name=f"spectask-scaling-{args.worker_id}")
    handler = cpu_work if args.handler == "cpu" else io_work
    async with broker:
        await broker.publisher()
        control.send("ready")
        await control.wait_go(TIMEOUT_SECONDS)
        stats = await serve(
            broker, bench, handler, args.worker_id, control.stop_event(TIMEOUT_SECONDS)
        )
    control.report({"processed": stats.processed, "succeeded": stats.succeeded})
    return 0


@dataclass(frozen=True)
class Cell:
    broker: str
    handler: str
    workers: int
    tasks_per_s: float


def _rotated(url: str, index: int) -> str:
    """The URL list starting at member `index`: workers spread over a cluster's nodes."""
    urls = url.split(",")
    return ",".join(urls[index % len(urls) :] + urls[: index % len(urls)])


async def measure_cell(url: str, broker: str, handler: str, workers: int, tasks: int) -> Cell:
    """One cell: fresh worker processes drain `tasks` pre-loaded tasks."""
    run_id = uuid.uuid4().hex[:8]
    bench = bench_topology(run_id, SPECTASK)
    config = RuntimeConfig(amqp_url=url)
    log = ResultLog()
    async with await Broker.connect(config, name="spectask-scaling-setup") as setup:
        await setup.declare(bench.topology)  # before anything is published or consumed
    collector = await SpectaskCollector.start(config, bench, log.collected)
    producer = await SpectaskProducer.open(config, bench)
    processes: list[WorkerProcess] = []
    try:
        for index in range(workers):
            name = f"{handler}-w{index + 1}"
            args = ["--worker", "--run-id", run_id, "--worker-id", name, "--handler", handler]
            processes.append(
                await WorkerProcess.spawn(name, "bench.scaling", args, _rotated(url, index))
            )
        await asyncio.gather(*(p.wait_ready(READY_SECONDS) for p in processes))
        ids = [uuid.uuid4().hex for _ in range(tasks)]
        await asyncio.wait_for(producer.preload(ids), timeout=TIMEOUT_SECONDS)
        for process in processes:
            process.go()

        def alive() -> None:
            collector.check()
            for process in processes:
                process.check_alive()

        finished = await log.wait_for(ids, TIMEOUT_SECONDS, check=alive)
        # from the first result on: a fresh worker's start (declare, reading the cancellation
        # stream, the first consume) is start-up, not throughput
        started = min(log.arrived[task_id] for task_id in ids)
        for process in processes:
            await process.stop(TIMEOUT_SECONDS)
    finally:
        for process in processes:
            await process.kill()
        await producer.close()
        await collector.close(TIMEOUT_SECONDS)
        with contextlib.suppress(Exception):
            await delete(url.split(",")[0], bench)
    return Cell(broker, handler, workers, (tasks - 1) / (finished - started))


def table(cells: Sequence[Cell]) -> str:
    """A Markdown table: one row per broker and handler, one column per worker count."""
    counts = sorted({cell.workers for cell in cells})
    head = "| broker | handler | " + " | ".join(f"{n} proc" for n in counts) + " |"
    lines = [head, "|---|---|" + "---:|" * len(counts)]
    keys = dict.fromkeys((cell.broker, cell.handler) for cell in cells)
    for broker, handler in keys:
        row = {
            c.workers: c.tasks_per_s for c in cells if (c.broker, c.handler) == (broker, handler)
        }
        values = " | ".join(f"{row[n]:,.0f}" if n in row else "-" for n in counts)
        lines.append(f"| {broker} | {handler} | {values} |")
    return "\n".join(lines)


def chart(cells: Sequence[Cell]) -> str:
    """An SVG line chart (tasks/s against processes), written by hand: no plotting dependency."""
    width, height, left, bottom, top, right = 640, 360, 60, 40, 20, 170
    counts = sorted({cell.workers for cell in cells})
    peak = max(cell.tasks_per_s for cell in cells) * 1.1
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]

    def x(n: int) -> float:
        return left + (width - left - right) * counts.index(n) / max(1, len(counts) - 1)

    def y(v: float) -> float:
        return height - bottom - (height - top - bottom) * v / peak

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        'stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
        f'<text x="{(width - right + left) / 2}" y="{height - 8}" text-anchor="middle">'
        "worker processes</text>",
        f'<text x="14" y="{top + 10}">tasks/s</text>',
    ]
    for n in counts:
        parts.append(
            f'<text x="{x(n):.0f}" y="{height - bottom + 16}" text-anchor="middle">{n}</text>'
        )
    for step in range(5):
        value = peak * step / 4
        parts.append(
            f'<text x="{left - 6}" y="{y(value) + 4:.0f}" text-anchor="end">{value:,.0f}</text>'
        )
    keys = list(dict.fromkeys((cell.broker, cell.handler) for cell in cells))
    for index, (broker, handler) in enumerate(keys):
        colour = colours[index % len(colours)]
        series = sorted(
            (c.workers, c.tasks_per_s) for c in cells if (c.broker, c.handler) == (broker, handler)
        )
        points = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in series)
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        label_y = top + 16 + 18 * index
        parts.append(
            f'<text x="{width - right + 12}" y="{label_y}" fill="{colour}">'
            f"{broker}, {handler}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


@contextlib.contextmanager
def _cluster(url: str | None) -> Any:
    """The cluster's URL list: CLUSTER_URL if given, else a fresh local cluster, closed after."""
    if url:
        yield url
        return
    from spectask.devbroker.cluster import LocalCluster

    with tempfile.TemporaryDirectory(prefix="spectask-scaling-") as base:
        cluster = LocalCluster(Path(base))
        try:
            cluster.start()
            yield cluster.url
        finally:
            cluster.close()


async def _cells(url: str, broker: str, tasks: int, counts: Sequence[int]) -> list[Cell]:
    cells = []
    for handler in HANDLERS:
        for workers in counts:
            saved = dict(os.environ)
            os.environ.update(SETTINGS[handler])
            if broker == "cluster":
                os.environ.update(CLUSTER_SETTINGS)
            try:
                cell = await measure_cell(url, broker, handler, workers, tasks)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            print(f"{broker:7} {handler:3} {workers} proc: {cell.tasks_per_s:8,.0f} tasks/s")
            cells.append(cell)
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="spectask throughput against worker processes")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TASKS} tasks per cell")
    parser.add_argument("--tasks", type=int, default=None, help=f"tasks per cell ({TASKS})")
    parser.add_argument("--no-cluster", action="store_true", help="the single node only")
    parser.add_argument("--chart", type=Path, default=CHART, help="where the SVG goes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", help=argparse.SUPPRESS)
    parser.add_argument("--handler", choices=HANDLERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        with contextlib.suppress(KeyboardInterrupt):
            return eventloop.run(_worker(args))
        return 1
    tasks = args.tasks or (QUICK_TASKS if args.quick else TASKS)
    counts = WORKER_COUNTS[:3] if args.quick else WORKER_COUNTS
    url = RuntimeConfig().amqp_url
    started = time.monotonic()
    try:
        cells = eventloop.run(_cells(url, "node", tasks, counts))
        if not args.no_cluster:
            with _cluster(os.environ.get("CLUSTER_URL")) as cluster_url:
                cells += eventloop.run(_cells(cluster_url, "cluster", tasks, counts))
    except BenchError as exc:
        print(f"bench-scaling: {exc}", file=sys.stderr)
        return 1
    print(f"\n{tasks} tasks per cell, {os.cpu_count()} CPUs, {time.monotonic() - started:.0f} s\n")
    print(table(cells))
    args.chart.write_text(chart(cells))
    print(f"\nchart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
