#!/usr/bin/env python3
"""`make bench`: spectask against the same pipeline in raw aio-pika, end to end, same run.

Pipeline on every side: producer -> `tasks` exchange -> task queue (x-max-priority 10) ->
W worker processes -> `results` exchange -> result queue -> collector. Persistent, mandatory,
confirmed task publishes; on `raw` and `spectask` persistent, confirmed results and acks only
after the result is confirmed; `raw-transient` publishes its results transient and unconfirmed
(what most libraries do), an extra column. Same payload bytes, prefetch and worker count; each
side gets its own run-id-prefixed copy of the spec's queues (deleted at the end).

Phases (`bench/phases.py`), each on fresh worker processes:
- results W=1, 2, 4: pre-load `--tasks` tasks while the workers wait at a gate, release them,
  time until the collector has every result; worker CPU per task from /proc over that window;
- results W=2 +dashboard: the same burst with a dashboard open and heartbeats; judged on the
  dashboard's CPU share of the pipeline's (`bench/dashboard_open.py`), the ratio of ratios
  against the plain W=2 burst printed beside it (`--only PHASE` runs one phase and its baseline);
- paced: offer `--rate` tasks/s for `--seconds` (open loop) at W=2; p50 and p99 latency;
- worker RSS: one worker, `--rss-tasks` tasks in tenths; RSS when ready, after the first tenth
  and at the end (flat = no leak).
The repeated phases run in `--pairs` pairs: within a pair, each phase runs on every side back to
back in a rotating order, so neither side always runs on a warmer or quieter machine. A bar is
judged on the pairwise values (`bench/verdict.py`): "inconclusive" when their min-max
straddles the bar. The load average is printed at the start and at the end.

Exit status: 0 with numbers (a miss of a bar is printed loudly, not failed: these are benchmark
figures), 1 when a run is invalid (lost tasks, timeouts, a worker that died). AMQP_URL names
the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from bench import chart, report
from bench.measure import BenchError, Sample
from bench.phases import SIDES, Phase, phase_list, rotated
from bench.session import BUILDERS, Settings, measure
from bench.topology import bench_topology, delete
from spectask import eventloop
from spectask.errors import SpectaskError
from spectask.runtime.broker import Broker, redact_url
from spectask.runtime.config import RuntimeConfig

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
CHART = Path(__file__).resolve().parents[1] / "docs" / "bench.svg"


def _workers(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected worker counts like 1,2,4, got {text!r}"
        ) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be >= 1, got {text!r}")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=5000, help="burst size (default 5000)")
    parser.add_argument(
        "--workers", type=_workers, default=(1, 2, 4), help="burst phases' worker counts (1,2,4)"
    )
    parser.add_argument(
        "--paced-workers", type=int, default=2, help="workers of the paced phase (default 2)"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="offered tasks/s (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced phase (default 10)")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved pairs (default 5)")
    parser.add_argument(
        "--rss-tasks", type=int, default=100_000, help="tasks of the RSS phase (default 100000)"
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=RuntimeConfig().prefetch,
        help="prefetch of workers and collectors on every side (default: SPECTASK_PREFETCH or 32)",
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="deadline of every wait (default 180 s)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON (default {RESULTS})")
    parser.add_argument(
        "--chart",
        type=Path,
        default=None,
        help=f"SVG chart (default {CHART}; with --quick, beside --output)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="PHASE",
        help="run only this phase (repeatable), with the phase it is compared to: "
        "--only 'results W=2 +dashboard' runs it and 'results W=2'",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run for tests: one pair, 100-task bursts, 1 s paced, 1,000 RSS tasks",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.seconds, args.pairs, args.rss_tasks = 100, 1.0, 1, 1000
    if args.chart is None:  # a smoke run or a part of the bench never redraws the README's
        args.chart = args.output.with_suffix(".svg") if args.quick or args.only else CHART
    if args.pairs < 1 or args.tasks < 1 or args.rss_tasks < 1:
        parser.error("--pairs, --tasks and --rss-tasks must be >= 1")
    return args


def selected(phases: list[Phase], only: list[str] | None) -> list[Phase]:
    """The phases `--only` names, with their baselines, in their usual order (all: None)."""
    if not only:
        return phases
    names = {phase.name for phase in phases}
    unknown = sorted(set(only) - names)
    if unknown:
        raise BenchError(
            f"no phase {', '.join(map(repr, unknown))}; the phases: "
            + ", ".join(repr(phase.name) for phase in phases)
        )
    wanted = set(only) | {p.baseline for p in phases if p.name in only and p.baseline}
    return [phase for phase in phases if phase.name in wanted]


def order(phases: list[Phase], pairs: int) -> list[tuple[int, Phase, str]]:
    """Pair by pair, phase by phase, every side back to back in a rotating order; then the
    phases that run once."""
    runs = [
        (pair, phase, side)
        for pair in range(pairs)
        for phase in phases
        if phase.repeated
        for side in rotated(phase.sides, pair)
    ]
    runs += [(0, phase, side) for phase in phases if not phase.repeated for side in phase.sides]
    return runs


async def declare_run(settings: Settings) -> None:
    broker = await Broker.connect(RuntimeConfig(), name="spectask-bench-setup")
    async with broker:
        for side in SIDES:
            await broker.declare(bench_topology(settings.run_id, side).topology)


async def delete_run(settings: Settings) -> None:
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


def _progress(sample: Sample, phase: Phase) -> str:
    shown = ", ".join(
        f"{metric.title} {sample.values[metric.key]:.{metric.decimals}f}"
        for metric in phase.metrics
    )
    return f"  pair {sample.pair + 1} {phase.name:<16} {sample.side:<14} {shown}"


async def bench(args: argparse.Namespace) -> int:
    settings = Settings(
        url=RuntimeConfig().amqp_url,
        run_id=f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}",
        tasks=args.tasks,
        rate=args.rate,
        seconds=args.seconds,
        rss_tasks=args.rss_tasks,
        prefetch=args.prefetch,
        timeout=args.timeout,
    )
    phases = selected(phase_list(args.workers, args.paced_workers, args.rate), args.only)
    load_start = os.getloadavg()
    print(
        f"spectask bench {settings.run_id} on {redact_url(settings.url)}, event loop "
        f"{eventloop.loop_name()}: {args.pairs} pair(s) of {', '.join(p.name for p in phases)}; "
        f"bursts of {settings.tasks}, {settings.rate:g}/s for {settings.seconds:g}s, "
        f"{settings.rss_tasks} RSS tasks, prefetch {settings.prefetch}; load average "
        f"{' '.join(f'{value:.2f}' for value in load_start)}",
        flush=True,
    )
    samples: list[Sample] = []
    try:
        await declare_run(settings)
        for pair, phase, side in order(phases, args.pairs):
            sample = await measure(BUILDERS[side], phase, settings, pair)
            samples.append(sample)
            print(_progress(sample, phase), flush=True)
    finally:
        await delete_run(settings)
    judged = report.judge_all(samples, phases)
    effects = report.judge_effects(samples, phases)
    summary = _summary(args, settings, samples, load_start, os.getloadavg())
    print(report.render(phases, judged, summary, effects), flush=True)
    report.write_json(args.output, samples, judged, summary, effects)
    chart.write(args.chart, json.loads(args.output.read_text()))
    print(f"written {args.output} and {args.chart}", flush=True)
    report.warn_if_under(phases, judged)
    return 0


def _summary(
    args: argparse.Namespace,
    settings: Settings,
    samples: list[Sample],
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
) -> dict[str, Any]:
    sides = sorted({sample.side for sample in samples}, key=SIDES.index)
    return {
        "run_id": settings.run_id,
        "config": {
            "tasks": settings.tasks,
            "workers": list(args.workers),
            "paced_workers": args.paced_workers,
            "rate": settings.rate,
            "seconds": settings.seconds,
            "pairs": args.pairs,
            "rss_tasks": settings.rss_tasks,
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
        "load_average": {"start": list(load_start), "end": list(load_end)},
        "message_bytes": {
            "task": {
                side: max(s.extra["task_bytes"] for s in samples if s.side == side)
                for side in sides
            },
            "same_task_body": len({s.extra["task_body"] for s in samples}) == 1,
            "result": {
                side: max(s.extra["result_bytes"] for s in samples if s.side == side)
                for side in sides
            },
        },
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
