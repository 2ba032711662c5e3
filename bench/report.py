"""The table people read and the JSON tools read, from the repetitions of both sides."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import PhaseNumbers, median

THROUGHPUT_BAR = 0.8
"""spectask must keep at least 80% of raw aio-pika's burst throughput at 2 workers."""


METRICS = ("throughput", "p50_ms", "p99_ms", "submit_rate", "offered_rate")
CPU_METRICS = ("worker_cpu_ms", "collector_cpu_ms")
COLUMNS = (
    # (key, title, width, decimals)
    ("throughput", "tasks/s", 10, 1),
    ("p50_ms", "p50 ms", 9, 2),
    ("p99_ms", "p99 ms", 9, 2),
    ("worker_cpu_ms", "wrk cpu ms", 12, 3),
    ("collector_cpu_ms", "coll cpu ms", 13, 3),
    ("submit_rate", "submit/s", 10, 0),
    ("offered_rate", "offered/s", 11, 1),
)
HEADER = f"{'side':<14}" + "".join(f"{title:>{width}}" for _, title, width, _ in COLUMNS)


def medians(numbers: Sequence[PhaseNumbers], side: str) -> dict[str, float]:
    mine = [dataclasses.asdict(n) for n in numbers if n.side == side]
    return {key: median(n[key] for n in mine) for key in (*METRICS, *CPU_METRICS)}


def ratios(raw: dict[str, float], spectask: dict[str, float]) -> dict[str, float]:
    """Throughput spectask/raw and latency raw/spectask (above 1: spectask is better);
    CPU per task spectask/raw (above 1: spectask costs more)."""

    def ratio(a: float, b: float) -> float:
        return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan

    return {
        "throughput": ratio(spectask["throughput"], raw["throughput"]),
        "submit_rate": ratio(spectask["submit_rate"], raw["submit_rate"]),
        "latency_p50": ratio(raw["p50_ms"], spectask["p50_ms"]),
        "latency_p99": ratio(raw["p99_ms"], spectask["p99_ms"]),
        "worker_cpu": ratio(spectask["worker_cpu_ms"], raw["worker_cpu_ms"]),
        "collector_cpu": ratio(spectask["collector_cpu_ms"], raw["collector_cpu_ms"]),
    }


def _row(label: str, values: dict[str, Any]) -> str:
    return f"{label:<14}" + "".join(
        f"{values[key]:>{width}.{decimals}f}" for key, _, width, decimals in COLUMNS
    )


def render(numbers: Sequence[PhaseNumbers], summary: dict[str, Any]) -> str:
    loop = summary["environment"]["event_loop"]
    lines = ["", f"event loop (both sides): {loop}", "per repetition (in the order run):", HEADER]
    for n in numbers:
        lines.append(_row(f"{n.side} #{n.repetition + 1}", dataclasses.asdict(n)))
    lines += ["", f"median of {summary['config']['repeats']}:", HEADER]
    for side in ("raw", "spectask"):
        lines.append(_row(side, summary["median"][side]))
    r = summary["ratios"]
    lines += [
        "",
        f"ratio spectask/raw: throughput {r['throughput']:.2f} (bar >= {THROUGHPUT_BAR:.2f}), "
        f"submit {r['submit_rate']:.2f}; latency raw/spectask: p50 {r['latency_p50']:.2f}, "
        f"p99 {r['latency_p99']:.2f}",
        f"CPU per task spectask/raw: workers {r['worker_cpu']:.2f}, "
        f"collector {r['collector_cpu']:.2f}",
    ]
    sizes = summary["message_bytes"]
    lines.append(
        f"message bytes: task raw {sizes['task']['raw']} / spectask {sizes['task']['spectask']}, "
        f"result raw {sizes['result']['raw']} / spectask {sizes['result']['spectask']}"
    )
    if not sizes["same_task_body"]:
        lines.append("WARNING: the two sides sent different task bodies; the comparison is off")
    return "\n".join(lines)


def warn_if_below_bar(summary: dict[str, Any]) -> None:
    """Loud, but not an error: a noisy machine must not turn a benchmark into a failure."""
    value = summary["ratios"]["throughput"]
    if math.isnan(value) or value >= THROUGHPUT_BAR:
        return
    bar = "!" * 78
    print(
        f"\n{bar}\n!!! spectask throughput is {value:.2f}x raw aio-pika: UNDER THE "
        f"{THROUGHPUT_BAR:.2f} BAR\n{bar}",
        file=sys.stderr,
        flush=True,
    )


def write_json(path: Path, numbers: Sequence[PhaseNumbers], summary: dict[str, Any]) -> None:
    document = {**summary, "repetitions": [dataclasses.asdict(n) for n in numbers]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
