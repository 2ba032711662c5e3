#!/usr/bin/env python3
"""`make bench`: spectask against the same pipeline in raw aio-pika, end to end, same run.

Pipeline on both sides: producer -> `tasks` exchange -> task queue (x-max-priority 10) ->
W worker processes -> `results` exchange -> result queue -> collector. Persistent messages,
mandatory publishes with confirms in flight, and acks only after the next hop is confirmed,
on both sides; same payload bytes, prefetch and worker count. Each side gets its own
run-id-prefixed copy of the spec's queues (deleted at the end), never the production ones.

Per repetition and side:
- throughput: pre-load `--tasks` tasks while the workers wait at a gate (started, connected,
  not consuming), release them, and time until the collector has every result;
- latency: offer `--rate` tasks/s for `--seconds` (open loop, below saturation) and time
  each task from submit to collected; p50 and p99.
- CPU per task during the burst, of the worker processes and of the bench process (which
  then runs only the collector), from /proc: less noisy than wall-clock numbers, and it
  says which process a difference comes from.
Repetitions alternate the side that goes first (raw, spectask; spectask, raw; ...), because
these machines are noisy and drift; the table shows each repetition and the medians.

Exit status: 0 with numbers (a ratio under the bar is printed loudly, not failed), 1 when a
run is invalid (lost tasks, timeouts, a worker that died). AMQP_URL names the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/run.py` works too

import aiormq

from bench import report
from bench.measure import BenchError, PhaseNumbers
from bench.session import SIDES, Repetition, Settings, measure_side
from bench.topology import bench_topology, delete
from spectask import eventloop
from spectask.errors import SpectaskError
from spectask.runtime.broker import Broker, redact_url
from spectask.runtime.config import RuntimeConfig

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=5000, help="burst size (default 5000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--rate", type=float, default=200.0, help="offered tasks/s (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency phase (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per side (default 3)")
    parser.add_argument(
        "--prefetch",
        type=int,
        default=RuntimeConfig().prefetch,
        help="prefetch of workers and collectors on both sides (default: SPECTASK_PREFETCH or 32)",
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="deadline of every wait (default 180 s)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON (default {RESULTS})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run for tests: 300 tasks, 100/s for 2 s, one repetition",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.rate, args.seconds, args.repeats = 300, 100.0, 2.0, 1
    return args


def order(repeats: int) -> list[tuple[int, str]]:
    """raw, spectask; spectask, raw; ... so neither side always runs on a warmer machine."""
    runs = []
    for repetition in range(repeats):
        sides = ("raw", "spectask") if repetition % 2 == 0 else ("spectask", "raw")
        runs += [(repetition, side) for side in sides]
    return runs


async def _declare(settings: Settings) -> None:
    broker = await Broker.connect(RuntimeConfig(), name="spectask-bench-setup")
    async with broker:
        for side in SIDES:
            await broker.declare(bench_topology(settings.run_id, side).topology)


async def _delete(settings: Settings) -> None:
    """Remove the run's queues; a failure here is reported, never hides the run's own error."""
    for side in SIDES:
        bench = bench_topology(settings.run_id, side)
        try:
            await asyncio.wait_for(delete(settings.url, bench), timeout=settings.timeout)
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            print(
                f"bench: could not delete {', '.join(bench.all_queue_names)}: {exc!r}; "
                "delete them by hand (rabbitmqctl delete_queue NAME)",
                file=sys.stderr,
            )


async def bench(args: argparse.Namespace) -> int:
    settings = Settings(
        url=RuntimeConfig().amqp_url,
        run_id=f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}",
        tasks=args.tasks,
        workers=args.workers,
        rate=args.rate,
        seconds=args.seconds,
        prefetch=args.prefetch,
        timeout=args.timeout,
    )
    print(
        f"spectask bench {settings.run_id} on {redact_url(settings.url)}: {settings.workers} "
        f"workers, prefetch {settings.prefetch}, burst of {settings.tasks}, "
        f"{settings.rate:g}/s for {settings.seconds:g}s, {args.repeats} repetition(s)",
        flush=True,
    )
    results: dict[str, list[Repetition]] = {side: [] for side in SIDES}
    numbers: list[PhaseNumbers] = []
    try:
        await _declare(settings)
        for repetition, side in order(args.repeats):
            outcome = await measure_side(SIDES[side], settings, repetition)
            results[side].append(outcome)
            numbers.append(outcome.numbers)
            n = outcome.numbers
            print(
                f"  {side:<9}#{repetition + 1}: {n.throughput:8.1f} tasks/s, "
                f"p50 {n.p50_ms:6.2f} ms, p99 {n.p99_ms:6.2f} ms",
                flush=True,
            )
    finally:
        await _delete(settings)
    summary = _summary(args, settings, numbers, results)
    print(report.render(numbers, summary), flush=True)
    report.write_json(args.output, numbers, summary)
    print(f"written {args.output}", flush=True)
    report.warn_if_below_bar(summary)
    return 0


def _summary(
    args: argparse.Namespace,
    settings: Settings,
    numbers: list[PhaseNumbers],
    results: dict[str, list[Repetition]],
) -> dict[str, Any]:
    medians = {side: report.medians(numbers, side) for side in SIDES}
    return {
        "run_id": settings.run_id,
        "config": {
            "tasks": settings.tasks,
            "workers": settings.workers,
            "rate": settings.rate,
            "seconds": settings.seconds,
            "repeats": args.repeats,
            "prefetch": settings.prefetch,
            "quick": args.quick,
        },
        "environment": {
            "python": platform.python_version(),
            "aio_pika": version("aio-pika"),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "event_loop": eventloop.loop_name(),
        },
        "message_bytes": {
            "task": {side: len(results[side][0].task_body) for side in SIDES},
            "same_task_body": len({r.task_body for rs in results.values() for r in rs}) == 1,
            "result": {side: max(r.result_bytes for r in results[side]) for side in SIDES},
        },
        "median": medians,
        "ratios": report.ratios(medians["raw"], medians["spectask"]),
        "bar": {"throughput": report.THROUGHPUT_BAR},
        "workers": {side: [r.worker_stats for r in results[side]] for side in SIDES},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return eventloop.run(bench(args))
    except (BenchError, SpectaskError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
