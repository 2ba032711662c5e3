"""The bench's verdict logic on synthetic numbers, and a quick real run that prints every phase.

No speed bar is asserted on the real run: timing assertions on a shared CI machine fail at
random. The bench itself exits non-zero only when a run is invalid (lost tasks, timeouts, dead
workers); the verdict (pass / under the bar / inconclusive) is checked here as a pure function.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bench import report
from bench.measure import BenchError, Sample
from bench.phases import DASHBOARD_CPU_SHARE, RAW, RAW_TRANSIENT, SPECTASK, Phase, phase_list
from bench.run import order, selected
from bench.session import Run, dashboard_cost
from bench.verdict import INCONCLUSIVE, PASS, UNDER, Bar, verdict
from spectask.runtime.config import RuntimeConfig

ROOT = Path(__file__).resolve().parents[1]
AT_LEAST_ONE = Bar(1.0, "higher")
AT_MOST_3_MS = Bar(3.0, "lower")


@pytest.mark.parametrize(
    ("values", "bar", "outcome"),
    [
        ([1.02, 1.10, 1.05, 1.00, 1.31], AT_LEAST_ONE, PASS),  # the bar itself counts as met
        ([0.61, 0.70, 0.66, 0.99, 0.80], AT_LEAST_ONE, UNDER),
        ([0.63, 1.04, 0.90, 1.10, 0.95], AT_LEAST_ONE, INCONCLUSIVE),  # the 0.63 run
        ([2.8, 2.9, 3.0], AT_MOST_3_MS, PASS),
        ([280.0, 4.4, 3.1], AT_MOST_3_MS, UNDER),
        ([2.8, 4.4, 2.9], AT_MOST_3_MS, INCONCLUSIVE),
        ([1.5, 1.6], AT_LEAST_ONE, INCONCLUSIVE),  # too few pairs for any verdict
        ([1.5, math.nan, 1.6, math.nan], AT_LEAST_ONE, INCONCLUSIVE),  # NaN pairs do not count
    ],
)
def test_verdict_needs_every_pair_on_one_side_of_the_bar(
    values: list[float], bar: Bar, outcome: str
) -> None:
    assert verdict(values, bar).outcome == outcome


def test_one_long_run_may_give_a_verdict_when_asked() -> None:
    assert verdict([0.4], Bar(4.0, "lower"), min_pairs=1).outcome == PASS
    assert verdict([9.0], Bar(4.0, "lower"), min_pairs=1).outcome == UNDER


def _samples(phase: Phase, key: str, raw: list[float], spectask: list[float]) -> list[Sample]:
    return [
        Sample(phase.name, side, pair, {key: value}, {})
        for side, values in ((RAW, raw), (SPECTASK, spectask), (RAW_TRANSIENT, raw))
        for pair, value in enumerate(values)
    ]


def test_pairwise_ratios_decide_even_when_the_medians_look_fine() -> None:
    """Medians 1000 vs 1000 (ratio 1.00) but one pair ran at 0.5: that is not a pass."""
    phase = phase_list((2,), 2, 200.0)[0]
    metric = phase.metrics[0]
    raw = [1000.0, 1000.0, 1000.0, 2000.0, 900.0]
    spectask = [1000.0, 1100.0, 1000.0, 1000.0, 950.0]
    row = report.judge(_samples(phase, metric.key, raw, spectask), phase, metric)
    assert row["ratio_of_medians"] == pytest.approx(1.0)
    assert row["pairwise"] == pytest.approx([1.0, 1.1, 1.0, 0.5, 950 / 900])
    assert row["verdict"] == INCONCLUSIVE
    assert row["sides"][RAW]["min"] == 900.0 and row["sides"][RAW]["max"] == 2000.0


def test_a_ratio_over_a_raw_value_that_shows_as_zero_is_not_printed() -> None:
    """RSS growth 1.5 MiB against raw's 0.02 (shown 0.0): "-", not "75.00", in the ratio column;
    a real ratio (the burst row beside it) is still printed."""
    phases = phase_list((2,), 2, 200.0)
    rss = next(phase for phase in phases if phase.kind == "rss")
    burst = phases[0]
    growth = next(metric for metric in rss.metrics if metric.key == "rss_growth_mib")
    samples = [
        Sample(rss.name, RAW, 0, {growth.key: 0.02}, {}),
        Sample(rss.name, SPECTASK, 0, {growth.key: 1.5}, {}),
        *(
            Sample(burst.name, side, pair, {"tasks_per_s": rate, "worker_cpu_us": 400.0}, {})
            for side, rate in ((RAW, 1000.0), (SPECTASK, 1200.0), (RAW_TRANSIENT, 1300.0))
            for pair in range(3)
        ),
    ]
    judged = report.judge_all(samples, [burst, rss])
    lines = report.render_table([burst, rss], judged)
    header = re.split(r"\s{2,}", lines[0].strip())
    ratio_column = header.index("spectask/raw")

    def ratio_cell(label: str) -> str:
        line = next(line for line in lines if label in line)
        return re.split(r"\s{2,}", line.strip())[ratio_column]

    assert ratio_cell("RSS growth") == "-"
    assert ratio_cell("tasks/s") == "1.20"


def test_the_dashboard_effect_is_the_ratio_of_ratios_per_pair() -> None:
    """Pair by pair: (spectask/raw with the dashboard) / (spectask/raw without it), shown."""
    phases = phase_list((2,), 2, 200.0)
    plain, dashboard = phases[0], phases[1]
    assert dashboard.dashboard and dashboard.baseline == plain.name and not plain.dashboard
    key = plain.metrics[0].key
    samples = _samples(plain, key, [1000.0, 900.0, 1000.0], [1000.0, 990.0, 800.0])
    samples += _samples(dashboard, key, [800.0, 900.0, 1000.0], [780.0, 900.0, 792.0])
    row = report.judge_effects(samples, phases)[dashboard.name][key]
    assert row["pairwise"] == pytest.approx([0.975, (900 / 900) / (990 / 900), 0.99])
    assert "verdict" not in row  # noise: the bar is judged on the CPU share
    assert "ratio of ratios" in "\n".join(
        report.render_effects(phases, report.judge_effects(samples, phases))
    )


@pytest.mark.parametrize(
    ("shares", "outcome"),
    [
        ([0.012], PASS),  # one pair is enough: each share is a bound on its own
        ([0.012, 0.05, 0.03], PASS),
        ([0.012, 0.07, 0.03], INCONCLUSIVE),
        ([0.08, 0.07], UNDER),
        ([math.nan], INCONCLUSIVE),  # a run that gave no share
    ],
)
def test_the_dashboard_bar_is_judged_on_its_cpu_share(shares: list[float], outcome: str) -> None:
    phases = phase_list((2,), 2, 200.0)
    plain, dashboard = phases[0], phases[1]
    key = plain.metrics[0].key
    ones = [1000.0] * len(shares)
    samples = _samples(plain, key, ones, ones) + _samples(dashboard, key, ones, ones)
    for sample in samples:
        if sample.phase == dashboard.name and sample.side == SPECTASK:
            sample.extra[DASHBOARD_CPU_SHARE] = shares[sample.pair]
    row = report.judge_effects(samples, phases)[dashboard.name][DASHBOARD_CPU_SHARE]
    assert row["verdict"] == outcome and row["limit"] == 0.05
    text = "\n".join(report.render_effects(phases, report.judge_effects(samples, phases)))
    assert "dashboard CPU share" in text and f"{shares[0]:.1%}" in text


def test_the_cpu_share_counts_the_dashboard_and_each_heartbeat() -> None:
    """3.2 s of burst, 2 workers, a 1 s interval: 2 x (1 + 3) heartbeats at 1 ms each."""
    run = Run(None, None, lambda: None, [None, None], None, None, 0.001)  # type: ignore[arg-type, list-item]
    config = RuntimeConfig(heartbeat_interval=1.0)
    cost = dashboard_cost(0.092, 4.0, 3.2, run, config)
    assert cost["heartbeats"] == 8 and cost["heartbeat_cpu_s"] == pytest.approx(0.008)
    assert cost[DASHBOARD_CPU_SHARE] == pytest.approx(0.1 / 4.0)
    raw = replace(run, heartbeat_cpu_s=None)  # raw workers send none
    assert dashboard_cost(0.092, 4.0, 3.2, raw, config)[DASHBOARD_CPU_SHARE] == pytest.approx(
        0.092 / 4.0
    )


def test_only_runs_the_named_phases_and_their_baselines() -> None:
    phases = phase_list((1, 2, 4), 2, 200.0)
    picked = selected(phases, ["results W=2 +dashboard"])
    assert [phase.name for phase in picked] == ["results W=2", "results W=2 +dashboard"]
    assert selected(phases, None) == phases
    with pytest.raises(BenchError, match="no phase 'W=9'"):
        selected(phases, ["W=9"])


def test_no_dashboard_phase_when_asked_for_none() -> None:
    phases = phase_list((1, 2, 4), 2, 200.0, dashboard_workers=None)
    assert not any(phase.dashboard for phase in phases)
    assert report.judge_effects([], phases) == {}


def test_pairs_interleave_and_rotate_which_side_goes_first() -> None:
    phases = phase_list((1, 2), 2, 200.0)
    runs = order(phases, 3)
    first = [side for _, phase, side in runs if phase is phases[0]]
    pair_1 = [RAW, SPECTASK, RAW_TRANSIENT]
    pair_2 = [SPECTASK, RAW_TRANSIENT, RAW]
    pair_3 = [RAW_TRANSIENT, RAW, SPECTASK]
    assert first == pair_1 + pair_2 + pair_3
    rss = [run for run in runs if run[1].kind == "rss"]
    assert [side for _, _, side in rss] == [RAW, SPECTASK] and runs[-2:] == rss


def test_quick_bench_prints_every_phase_and_a_verdict_per_bar(
    amqp_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "latest.json"
    completed = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--output", str(output)],
        cwd=ROOT,
        env={**os.environ, "AMQP_URL": amqp_url},
        capture_output=True,
        text=True,
        timeout=420,  # a burst run per result mode and worker count: 27 of them
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    assert "event loop" in out and "load average" in out
    table = [line for line in out.splitlines() if ": " in line and line[:1] != " "]
    phases = phase_list((1, 2, 4), 2, 200.0)
    for phase in phases:
        for metric in phase.metrics:
            label = f"{phase.name}: {metric.title}"
            rows = [line for line in table if line.startswith(label)]
            assert rows, f"no row {label!r} in:\n{out}"
            if metric.bar is not None:  # one pair: a bar is judged, and it says it cannot be
                expected = PASS if not phase.repeated else INCONCLUSIVE
                assert expected in rows[0] or (not phase.repeated and "UNDER" in rows[0])
    assert "pairwise spectask/raw" in out

    document = json.loads(output.read_text())
    assert document["config"]["quick"] is True
    assert len(document["load_average"]["start"]) == 3
    assert set(document["phases"]) == {phase.name for phase in phases}
    burst = document["phases"]["results W=2"]["tasks_per_s"]
    assert set(burst["sides"]) == {RAW, SPECTASK, RAW_TRANSIENT}
    assert all(burst["sides"][side]["median"] > 0 for side in burst["sides"])
    assert burst["verdict"] == INCONCLUSIVE
    rss = document["phases"]["worker RSS W=1"]["rss_end_mib"]["sides"]
    assert set(rss) == {RAW, SPECTASK} and rss[SPECTASK]["median"] > 0
    assert document["message_bytes"]["same_task_body"] is True
    # the dashboard phase ran with a live feed, and its ratio of ratios was computed
    [dashboard] = [phase for phase in phases if phase.dashboard]
    effect = document["effects"][dashboard.name]["tasks_per_s"]
    assert len(effect["pairwise"]) == 1 and effect["pairwise"][0] > 0
    share = document["effects"][dashboard.name][DASHBOARD_CPU_SHARE]
    assert len(share["pairwise"]) == 1 and 0 <= share["pairwise"][0] < 1
    assert share["verdict"] in (PASS, UNDER)  # one pair gives a verdict here
    [spectask_run] = [
        s for s in document["samples"] if s["phase"] == dashboard.name and s["side"] == SPECTASK
    ]
    assert spectask_run["extra"]["heartbeats"] >= 2  # one per worker at least
    assert spectask_run["extra"]["heartbeat_cpu_s"] > 0
    assert "dashboard CPU share in results W=2 +dashboard" in out
    runs = [s for s in document["samples"] if s["phase"] == dashboard.name]
    assert {s["side"] for s in runs} == {RAW, SPECTASK, RAW_TRANSIENT}
    assert all(s["extra"]["dashboard_snapshots"] >= 2 for s in runs)
    assert "ratio of ratios" in out
    svg = (tmp_path / "latest.svg").read_text()  # the chart, beside the JSON in a quick run
    assert (
        svg.startswith("<svg")
        and "results W=2" in svg
        and "http://" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )


def test_the_chart_draws_every_burst_phase_with_its_spread_and_ratio() -> None:
    from bench import chart

    phases = phase_list((2,), 2, 200.0)
    key = phases[0].metrics[0].key
    samples = _samples(phases[0], key, [1000.0, 800.0, 900.0], [950.0, 700.0, 1100.0])
    svg = chart.render_svg(report.judge_all(samples, phases[:1]), "load 1.00")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "results W=2" in svg and "spectask/raw 1.06" in svg and "load 1.00" in svg
    assert svg.count('stroke="black"') == 3  # a min-max whisker per side
