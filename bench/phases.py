"""What `make bench` measures: the phase list, the metrics of each phase and their bars.

Every phase runs on fresh worker processes of each side, so phases are independent and can be
added, dropped or reordered here without touching how a run is made. Repeated phases run once
per pair (raw, spectask and the transient raw variant back to back, in a rotating order); the
RSS phase is one long run per side at the end.

Result modes (`x-spectask-results`): `RESULT_MODES` lists the modes the burst phases are run
in, and each worker process gets `--result-mode`. The spectask worker serves its task type in
that mode; the raw workers ignore it and keep their own guarantees, so `spectask/raw` of a
`batched` phase compares batching with the hand-written confirmed pipeline (the issue's 1.5x)
and a `none` phase is best read against the raw-transient column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.verdict import Bar

RAW = "raw"
SPECTASK = "spectask"
RAW_TRANSIENT = "raw-transient"
SIDES = (RAW, SPECTASK, RAW_TRANSIENT)
"""`raw` has spectask's guarantees (persistent, confirmed results); `raw-transient` publishes
results transient and unconfirmed, which is what most libraries do: an extra column, no bar."""

RESULT_MODES = ("confirmed", "batched", "none")
"""Result modes the burst phases run in (see the module docstring)."""

DASHBOARD_CPU_SHARE = "dashboard_cpu_share"
DASHBOARD_CPU_BOUND = Bar(0.05, "lower")
"""Issue 10: with a dashboard open and heartbeats, spectask/raw stays within 5% of the ratio
without them. Judged on a bound noise cannot swing: the CPU the dashboard process and the
heartbeats used in each spectask run of the phase, as a share of the CPU of the pipeline's
processes in it (bench.dashboard_open), <= 5%. Each pair's share is itself a bound, so one
pair gives a verdict. The ratio of ratios, (spectask/raw with) / (spectask/raw without), is
printed beside it; on 2 shared cores it swung 0.66-1.46 between pairs."""

Kind = Literal["burst", "paced", "rss"]
Compare = Literal["ratio", "absolute"]


@dataclass(frozen=True)
class Metric:
    """One row of the table. `compare="ratio"` judges spectask/raw per pair against the bar;
    `"absolute"` judges spectask's own value per pair (a latency or a growth in MiB)."""

    key: str
    title: str
    decimals: int
    better: Literal["higher", "lower"]
    bar: Bar | None = None
    compare: Compare = "ratio"


THROUGHPUT = Metric("tasks_per_s", "tasks/s", 0, "higher", Bar(1.0, "higher"))
WORKER_CPU = Metric("worker_cpu_us", "worker CPU us/task", 0, "lower", Bar(1.0, "lower"))
P50 = Metric("p50_ms", "p50 ms", 2, "lower", Bar(3.0, "lower"), "absolute")
P99 = Metric("p99_ms", "p99 ms", 2, "lower", Bar(15.0, "lower"), "absolute")
OFFERED = Metric("offered_per_s", "offered/s", 0, "higher")
RSS_START = Metric("rss_start_mib", "RSS MiB at start", 1, "lower")
RSS_WARM = Metric("rss_warm_mib", "RSS MiB after 1/10", 1, "lower")
RSS_END = Metric("rss_end_mib", "RSS MiB at the end", 1, "lower")
RSS_GROWTH = Metric("rss_growth_mib", "RSS growth MiB", 1, "lower", Bar(4.0, "lower"), "absolute")
"""Flat = at most 4 MiB more after all N tasks than after the first tenth (the first tenth
warms caches and pools up); a leak of 40 bytes per task over 100,000 tasks fails it."""

METRICS: dict[Kind, tuple[Metric, ...]] = {
    "burst": (THROUGHPUT, WORKER_CPU),
    "paced": (P50, P99, OFFERED),
    "rss": (RSS_START, RSS_WARM, RSS_END, RSS_GROWTH),
}


@dataclass(frozen=True)
class Phase:
    name: str
    kind: Kind
    workers: int
    sides: tuple[str, ...]
    repeated: bool
    result_mode: str = "confirmed"
    dashboard: bool = False
    """Run with a dashboard open (`bench.dashboard_open`) and spectask workers heartbeating."""
    baseline: str | None = None
    """The phase this one is compared to for the ratio of ratios (the same, without it)."""

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return METRICS[self.kind]


def phase_list(
    burst_workers: tuple[int, ...],
    paced_workers: int,
    rate: float,
    dashboard_workers: int | None = 2,
) -> list[Phase]:
    """The phases in the order they run within a pair, then the once-only ones.

    The dashboard phase (None: none) runs right after the plain burst of the same worker
    count, so the two runs it is compared with are as close in time as the pair allows.
    """
    phases: list[Phase] = []
    for mode in RESULT_MODES:
        for workers in burst_workers:
            name = f"results W={workers}" + ("" if mode == "confirmed" else f" {mode}")
            phases.append(Phase(name, "burst", workers, SIDES, repeated=True, result_mode=mode))
            if mode == "confirmed" and workers == dashboard_workers:
                phases.append(
                    Phase(
                        f"{name} +dashboard",
                        "burst",
                        workers,
                        SIDES,
                        repeated=True,
                        dashboard=True,
                        baseline=name,
                    )
                )
    paced = f"paced {rate:g}/s W={paced_workers}"
    phases.append(Phase(paced, "paced", paced_workers, SIDES, repeated=True))
    phases.append(Phase("worker RSS W=1", "rss", 1, (RAW, SPECTASK), repeated=False))
    return phases


def rotated(sides: tuple[str, ...], pair: int) -> tuple[str, ...]:
    """raw, spectask, transient; spectask, transient, raw; ...: no side always goes first."""
    shift = pair % len(sides)
    return sides[shift:] + sides[:shift]
