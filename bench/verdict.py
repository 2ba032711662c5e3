"""The verdict of one bar, from repeated paired runs: pass, under the bar, or inconclusive.

One run on a shared 2-core machine does not give a verdict (issue 13: the same code measured
0.63x and 1.0x raw an hour apart), so a bar is judged on every pair, not on one number:

- `pass`: every pair's value is on the good side of the bar (min-max all at or above it for
  "higher is better", all at or below it for "lower is better");
- `under the bar`: every pair's value is on the bad side of it;
- `inconclusive`: the pairs' min-max straddles the bar (the spread between runs is wider
  than the gap to the bar), or there are fewer than `MIN_PAIRS` pairs.

A pair is one raw run and one spectask run of the same phase, back to back, so a value is the
pairwise ratio spectask/raw (both saw nearly the same machine) or, for an absolute bar such
as "p50 <= 3 ms", spectask's own value in that pair. The ratio of the medians is printed too,
but a verdict never rests on it alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

PASS = "pass"
UNDER = "under the bar"
INCONCLUSIVE = "inconclusive"

MIN_PAIRS = 3
"""Below this a min-max says nothing about the spread: the verdict is `inconclusive`."""

Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Bar:
    """A bar a metric must meet: `value >= limit` ("higher") or `value <= limit` ("lower")."""

    limit: float
    better: Direction

    def met(self, value: float) -> bool:
        return value >= self.limit if self.better == "higher" else value <= self.limit

    def describe(self) -> str:
        return f"{'>=' if self.better == 'higher' else '<='} {self.limit:g}"


@dataclass(frozen=True)
class Verdict:
    outcome: str
    why: str


def verdict(values: Sequence[float], bar: Bar, min_pairs: int = MIN_PAIRS) -> Verdict:
    """Judge `values` (one per pair; NaNs are runs that gave no number) against `bar`."""
    finite = [value for value in values if not math.isnan(value)]
    if len(finite) < min_pairs:
        return Verdict(INCONCLUSIVE, f"{len(finite)} pair(s), a verdict needs {min_pairs}")
    low, high = min(finite), max(finite)
    spread = f"pairs {low:.3g}-{high:.3g}, bar {bar.describe()}"
    met = [bar.met(value) for value in finite]
    if all(met):
        return Verdict(PASS, spread)
    if not any(met):
        return Verdict(UNDER, spread)
    return Verdict(INCONCLUSIVE, f"{spread}: the spread straddles the bar")
