#!/usr/bin/env python3
"""`make bench-profile`: where a worker's CPU goes, spectask against raw, from py-spy samples.

One worker per side (W=1), `--tasks` pre-loaded tasks released at once, exactly as the bench's
burst phase runs them (`bench.session`), with `py-spy record` attached to the
worker between `ready` and `go`. Each sample is charged to the library its innermost frame is
in (self time), and to the stages it is inside (inclusive): so "json/pydantic 12%" is time
spent in those libraries, wherever called from. Shares times the worker's CPU µs/task (from
/proc, over the timed window) give µs/task. A sampling profile of a few seconds is itself
noisy: read shares to the nearest few percent, and the bench's own numbers for speed.

`--result-mode` runs the spectask worker in that mode (`batched`, `none`); `none` is profiled
against raw-transient, the raw side that does not confirm its results either.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/profile.py` too

from bench.measure import BenchError, Sample
from bench.phases import RAW, RAW_TRANSIENT, RESULT_MODES, SPECTASK, WORKER_CPU, Phase
from bench.run import declare_run, delete_run
from bench.session import BUILDERS, Settings, measure
from spectask import eventloop
from spectask.runtime.config import RuntimeConfig

LIBRARIES = (  # py-spy names a frame `function (package/module.py:line)`
    ("aiormq/pamqp (AMQP frames)", ("(aiormq/", "(pamqp/")),
    ("aio-pika", ("(aio_pika/",)),
    ("json/pydantic", ("(json/", "(pydantic/", "(pydantic_core/", "(orjson")),
    ("spectask runtime", ("(spectask/",)),
    ("bench handler/raw worker code", ("(bench/",)),
    ("event loop, sockets (asyncio/uvloop)", ("(asyncio/", "(uvloop/", "(socket", "(selectors")),
)
OTHER = "other (stdlib, interpreter)"
STAGES = (
    ("publishing (results, events)", ("publish (", "basic_publish")),
    ("validating and serializing (pydantic)", ("(pydantic/", "(pydantic_core/")),
    ("the handler", ("process_statistics", "summarize")),
)


def library(frame: str) -> str:
    for name, markers in LIBRARIES:
        if any(marker in frame for marker in markers):
            return name
    return OTHER


def read_samples(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw format: one line per distinct stack, `outer;...;inner count`."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def breakdown(path: Path) -> tuple[Counter[str], Counter[str], int]:
    own: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    total = 0
    for frames, count in read_samples(path):
        total += count
        if not any(frames):  # py-spy could not read the stack (a thread starting or ending)
            continue
        own[library(frames[-1])] += count
        for name, markers in STAGES:
            if any(marker in frame for frame in frames for marker in markers):
                inside[name] += count
    return own, inside, total


def render(results: dict[str, tuple[Sample, Counter[str], Counter[str], int]]) -> str:
    sides = list(results)
    names = [name for name, _ in LIBRARIES] + [OTHER]
    header = "| worker CPU, W=1 | " + " | ".join(sides) + " |"
    lines = [header, "|---" + "|---:" * len(sides) + "|"]

    def cells(counter_of: int, name: str) -> str:
        out = []
        for side in sides:
            sample, own, inside, total = results[side]
            counter = own if counter_of == 0 else inside
            share = counter[name] / total if total else 0.0
            us = share * sample.values[WORKER_CPU.key]
            out.append(f"{us:,.0f} µs ({share:.0%})")
        return " | ".join(out)

    lines.append(
        "| **total per task** (from /proc) | "
        + " | ".join(f"**{results[s][0].values[WORKER_CPU.key]:,.0f} µs**" for s in sides)
        + " |"
    )
    lines += [f"| self: {name} | {cells(0, name)} |" for name in names]
    lines += [f"| inside: {name} | {cells(1, name)} |" for name, _ in STAGES]
    lines.append("| samples | " + " | ".join(f"{results[s][3]:,}" for s in sides) + " |")
    return "\n".join(lines)


async def profile(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="spectask-profile-"))
    settings = Settings(
        url=RuntimeConfig().amqp_url,
        run_id=f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}-profile",
        tasks=args.tasks,
        rate=200.0,
        seconds=1.0,
        rss_tasks=1,
        prefetch=RuntimeConfig().prefetch,
        timeout=args.timeout,
        sample_dir=folder,
        sample_rate=args.rate,
    )
    results = {}
    try:
        await declare_run(settings)
        baseline = RAW_TRANSIENT if args.result_mode == "none" else RAW
        for side in (baseline, SPECTASK):
            phase = Phase(
                "profile W=1", "burst", 1, (side,), repeated=False, result_mode=args.result_mode
            )
            sample = await measure(BUILDERS[side], phase, settings, 0)
            samples = folder / f"{side}-1-w1.txt"  # the worker id run_phase gives W=1
            own, inside, total = breakdown(samples)
            results[side] = (sample, own, inside, total)
            print(
                f"  {side}: {sample.values['tasks_per_s']:,.0f} tasks/s, "
                f"{sample.values[WORKER_CPU.key]:,.0f} µs CPU/task, {total:,} samples ({samples})",
                flush=True,
            )
    finally:
        await delete_run(settings)
    print(render(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=30_000, help="tasks (default 30000)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples/s (default 250)")
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline of every wait")
    parser.add_argument(
        "--result-mode",
        choices=RESULT_MODES,
        default=RESULT_MODES[0],
        help="the spectask worker's result mode (none: against raw-transient)",
    )
    args = parser.parse_args(argv)
    try:
        return eventloop.run(profile(args))
    except BenchError as exc:
        print(f"bench profile failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
