"""The table people read and the JSON tools read, from every sample of every side.

For each phase and metric: each side's median and min-max over the pairs, the ratio of the
medians spectask/raw, the pairwise ratios spectask/raw (pair i's spectask run over pair i's
raw run, which ran next to it), and the verdict of the metric's bar (`bench.verdict`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import Sample, median
from bench.phases import (
    DASHBOARD_CPU_BOUND,
    DASHBOARD_CPU_SHARE,
    RAW,
    RAW_TRANSIENT,
    SIDES,
    SPECTASK,
    Metric,
    Phase,
)
from bench.verdict import MIN_PAIRS, UNDER, verdict


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _by_pair(samples: Sequence[Sample], phase: Phase, side: str, key: str) -> dict[int, float]:
    return {
        s.pair: s.values.get(key, math.nan)
        for s in samples
        if s.phase == phase.name and s.side == side
    }


def judge(samples: Sequence[Sample], phase: Phase, metric: Metric) -> dict[str, Any]:
    """One row: per-side spread, ratio of medians, pairwise values and the verdict."""
    per_side = {side: _by_pair(samples, phase, side, metric.key) for side in phase.sides}
    sides: dict[str, dict[str, Any]] = {}
    for side, by_pair in per_side.items():
        values = [by_pair[pair] for pair in sorted(by_pair)]
        finite = [value for value in values if not math.isnan(value)] or [math.nan]
        sides[side] = {
            "values": values,
            "median": median(values),
            "min": min(finite),
            "max": max(finite),
        }
    raw, spectask = per_side.get(RAW, {}), per_side.get(SPECTASK, {})
    pairs = sorted(raw.keys() & spectask.keys())
    pairwise = [_ratio(spectask[pair], raw[pair]) for pair in pairs]
    row: dict[str, Any] = {
        "sides": sides,
        "ratio_of_medians": _ratio(sides[SPECTASK]["median"], sides[RAW]["median"]),
        "pairwise": pairwise,
    }
    if RAW_TRANSIENT in sides:
        row["ratio_to_transient"] = _ratio(
            sides[SPECTASK]["median"], sides[RAW_TRANSIENT]["median"]
        )
    if metric.bar is not None:
        judged = pairwise if metric.compare == "ratio" else [spectask[pair] for pair in pairs]
        outcome = verdict(judged, metric.bar, MIN_PAIRS if phase.repeated else 1)
        row["bar"] = {
            "compare": metric.compare,
            "limit": metric.bar.limit,
            "better": metric.bar.better,
        }
        row["judged"] = judged
        row["verdict"] = outcome.outcome
        row["why"] = outcome.why
    return row


def judge_all(samples: Sequence[Sample], phases: Sequence[Phase]) -> dict[str, Any]:
    return {
        phase.name: {metric.key: judge(samples, phase, metric) for metric in phase.metrics}
        for phase in phases
    }


def _pair_ratios(samples: Sequence[Sample], phase: Phase, key: str) -> dict[int, float]:
    raw = _by_pair(samples, phase, RAW, key)
    spectask = _by_pair(samples, phase, SPECTASK, key)
    return {pair: _ratio(spectask[pair], raw[pair]) for pair in raw.keys() & spectask.keys()}


def judge_effect(samples: Sequence[Sample], phase: Phase, baseline: Phase) -> dict[str, Any]:
    """The dashboard's cost: its CPU share per spectask run (judged), and the ratio of ratios
    per pair, (spectask/raw in `phase`) / (spectask/raw in `baseline`) (shown).

    Both ratios of a pair ran minutes apart on the same machine, so the machine's drift
    mostly cancels, but not enough to see 5% on 2 shared cores; the CPU share, an upper bound
    of the dashboard's cost on a CPU-bound machine, is what the bar is judged on
    (bench.phases.DASHBOARD_CPU_BOUND), every pair on its own.
    """
    rows: dict[str, Any] = {}
    for metric in phase.metrics:
        with_it = _pair_ratios(samples, phase, metric.key)
        without = _pair_ratios(samples, baseline, metric.key)
        pairs = sorted(with_it.keys() & without.keys())
        values = [_ratio(with_it[pair], without[pair]) for pair in pairs]
        rows[metric.key] = {"baseline": baseline.name, **_spread_of(values)}
    shares = [
        s.extra.get(DASHBOARD_CPU_SHARE, math.nan)
        for s in sorted(samples, key=lambda sample: sample.pair)
        if s.phase == phase.name and s.side == SPECTASK
    ]
    outcome = verdict(shares, DASHBOARD_CPU_BOUND, min_pairs=1)
    rows[DASHBOARD_CPU_SHARE] = {
        **_spread_of(shares),
        "limit": DASHBOARD_CPU_BOUND.limit,
        "verdict": outcome.outcome,
        "why": outcome.why,
    }
    return rows


def _spread_of(values: list[float]) -> dict[str, Any]:
    finite = [value for value in values if not math.isnan(value)] or [math.nan]
    return {"pairwise": values, "median": median(values), "min": min(finite), "max": max(finite)}


def judge_effects(samples: Sequence[Sample], phases: Sequence[Phase]) -> dict[str, Any]:
    """`judge_effect` for every phase that names a baseline."""
    by_name = {phase.name: phase for phase in phases}
    return {
        phase.name: judge_effect(samples, phase, by_name[phase.baseline])
        for phase in phases
        if phase.baseline is not None and phase.baseline in by_name
    }


def render_effects(phases: Sequence[Phase], effects: dict[str, Any]) -> list[str]:
    """Per compared phase: the CPU share with its verdict, then the ratio of ratios."""
    by_name = {phase.name: phase for phase in phases}
    lines: list[str] = []
    for name, rows in effects.items():
        phase = by_name[name]
        share = rows[DASHBOARD_CPU_SHARE]
        outcome = "UNDER THE BAR" if share["verdict"] == UNDER else share["verdict"]
        percents = " ".join(f"{value:.1%}" for value in share["pairwise"])
        lines.append(
            f"dashboard CPU share in {name} (dashboard process + heartbeats / the pipeline's "
            f"processes, spectask runs): median {share['median']:.1%} [{share['min']:.1%}-"
            f"{share['max']:.1%}]; pairs {percents}  {outcome} (<= {share['limit']:.0%}, "
            "an upper bound of its cost on a CPU-bound machine)"
        )
        lines.append(
            f"ratio of ratios, (spectask/raw in {name}) / (spectask/raw in "
            f"{phase.baseline}), per pair (machine noise: shown, not judged):"
        )
        for metric in phase.metrics:
            row = rows[metric.key]
            pairs = " ".join(f"{value:.3f}" for value in row["pairwise"])
            lines.append(
                f"  {metric.title}: median {row['median']:.3f} [{row['min']:.3f}-"
                f"{row['max']:.3f}]; pairs {pairs}"
            )
    return lines


def _cell(side: dict[str, Any] | None, decimals: int) -> str:
    if side is None:
        return "-"
    if side["min"] == side["max"] or math.isnan(side["min"]):
        return f"{side['median']:.{decimals}f}"
    return f"{side['median']:.{decimals}f} [{side['min']:.{decimals}f}-{side['max']:.{decimals}f}]"


def _spread(values: Sequence[float], decimals: int) -> str:
    finite = [value for value in values if not math.isnan(value)]
    if not finite:
        return "-"
    return f"{min(finite):.{decimals}f}-{max(finite):.{decimals}f}"


def _verdict_cell(metric: Metric, row: dict[str, Any]) -> str:
    if metric.bar is None:
        return ""
    bar = metric.bar.describe()
    what = f"spectask/raw {bar}" if metric.compare == "ratio" else f"spectask {bar}"
    shown = "UNDER THE BAR" if row["verdict"] == UNDER else row["verdict"]
    return f"{shown} ({what})"


def _label(phase: Phase, metric: Metric) -> str:
    return f"{phase.name}: {metric.title}"


def _ratio_cell(row: dict[str, Any], metric: Metric) -> str:
    """The ratio of the medians, or "-" when raw's median shows as 0 at the row's precision:
    an RSS growth of 1.5 MiB over raw's 0.02 printed as "65.83" reads as a verdict it is not."""
    raw = row["sides"].get(RAW)
    if raw is None or round(raw["median"], metric.decimals) == 0:
        return "-"
    return f"{row['ratio_of_medians']:.2f}"


def render_table(phases: Sequence[Phase], judged: dict[str, Any]) -> list[str]:
    """One row per phase and metric; every column as wide as its widest cell."""
    header = ["phase: metric", *SIDES, "spectask/raw", "pairs", "verdict"]
    rows = [header]
    for phase in phases:
        for metric in phase.metrics:
            row = judged[phase.name][metric.key]
            pair_decimals = 2 if metric.compare == "ratio" else metric.decimals
            rows.append(
                [
                    _label(phase, metric),
                    *(_cell(row["sides"].get(side), metric.decimals) for side in SIDES),
                    _ratio_cell(row, metric),
                    _spread(row.get("judged", row["pairwise"]), pair_decimals),
                    _verdict_cell(metric, row),
                ]
            )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]

    def line(cells: list[str]) -> str:
        label, *numbers, verdict_text = cells
        aligned = "  ".join(
            f"{cell:>{width}}" for cell, width in zip(numbers, widths[1:-1], strict=True)
        )
        return f"{label:<{widths[0]}}  {aligned}  {verdict_text}".rstrip()

    lines = [line(rows[0]), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    lines += [line(row) for row in rows[1:]]
    return lines


def render_pairwise(phases: Sequence[Phase], judged: dict[str, Any]) -> list[str]:
    lines = ["pairwise spectask/raw, pair 1, 2, ... (each pair ran back to back):"]
    for phase in phases:
        if not phase.repeated:
            continue
        for metric in phase.metrics:
            ratios = " ".join(
                f"{value:.2f}" for value in judged[phase.name][metric.key]["pairwise"]
            )
            lines.append(f"  {_label(phase, metric)}: {ratios}")
    return lines


def render(
    phases: Sequence[Phase],
    judged: dict[str, Any],
    summary: dict[str, Any],
    effects: dict[str, Any] | None = None,
) -> str:
    load = summary["load_average"]
    lines = [
        "",
        f"event loop (every side): {summary['environment']['event_loop']}; "
        f"{summary['config']['pairs']} pair(s); load average (1, 5, 15 min) at start "
        f"{_load(load['start'])}, at the end {_load(load['end'])} "
        f"on {summary['environment']['cpus']} CPUs",
        "",
        *render_table(phases, judged),
        "",
        *render_pairwise(phases, judged),
        "",
        *([*render_effects(phases, effects), ""] if effects else []),
        "cells: median [min-max] over the pairs; spectask/raw: ratio of the medians; pairs: "
        "min-max of the pairwise spectask/raw (ratio bars) or of spectask's own values "
        "(absolute bars)",
        "verdict: pass = every pair meets the bar; UNDER THE BAR = no pair does; inconclusive "
        f"= the pairs straddle the bar (spread wider than the gap) or fewer than {MIN_PAIRS} pairs",
    ]
    transient = [
        f"{name} {row[key]['ratio_to_transient']:.2f}"
        for name, row in judged.items()
        for key in row
        if "ratio_to_transient" in row[key] and key == "tasks_per_s"
    ]
    if transient:
        lines.append("throughput spectask/raw-transient (medians): " + ", ".join(transient))
    sizes = summary["message_bytes"]
    lines.append(
        "message bytes: task "
        + ", ".join(f"{side} {sizes['task'][side]}" for side in sizes["task"])
        + "; result "
        + ", ".join(f"{side} {sizes['result'][side]}" for side in sizes["result"])
    )
    if not sizes["same_task_body"]:
        lines.append("WARNING: the sides sent different task bodies; the comparison is off")
    return "\n".join(lines)


def _load(values: Sequence[float]) -> str:
    return " ".join(f"{value:.2f}" for value in values)


def warn_if_under(phases: Sequence[Phase], judged: dict[str, Any]) -> None:
    """Loud, but not an error: a benchmark figure, not a test (exit status stays 0)."""
    under = [
        f"{phase.name}: {metric.title} ({judged[phase.name][metric.key]['why']})"
        for phase in phases
        for metric in phase.metrics
        if judged[phase.name][metric.key].get("verdict") == UNDER
    ]
    if not under:
        return
    bar = "!" * 78
    body = "\n".join(f"!!! UNDER THE BAR: {line}" for line in under)
    print(f"\n{bar}\n{body}\n{bar}", file=sys.stderr, flush=True)


def write_json(
    path: Path,
    samples: Sequence[Sample],
    judged: dict[str, Any],
    summary: dict[str, Any],
    effects: dict[str, Any] | None = None,
) -> None:
    document = {
        **summary,
        "phases": judged,
        "effects": effects or {},
        "samples": [dataclasses.asdict(sample) for sample in samples],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
