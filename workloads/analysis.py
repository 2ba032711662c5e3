"""Data analysis: group and aggregate records, describe a series, find its trend and anomalies.

Inputs that no retry can fix (no data, a missing or non-numeric field, NaN or infinity) raise
`PermanentTaskError` with the offending record or value index in the message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from workloads.errors import PermanentTaskError

AGGREGATES: Final = ("sum", "mean", "count", "min", "max")
METHODS: Final = ("zscore", "iqr")
DEFAULT_PERCENTILES: Final = (25.0, 50.0, 75.0, 95.0)
MAX_REPORTED_ANOMALIES: Final = 1000
TREND_T_CUTOFF: Final = 2.0
"""A trend is up or down when its slope is at least this many standard errors from zero."""

JsonScalar = str | int | float | bool | None
FloatArray = npt.NDArray[np.float64]


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class Group(_Result):
    """One group of an aggregation: its key, how many records it has, the aggregate."""

    key: JsonScalar
    count: int
    value: int | float


class AggregateResult(_Result):
    group_by: str
    field: str
    function: str
    groups: list[Group]
    """In the order each group's key first appears in the records."""


class PercentileValue(_Result):
    percentile: float
    value: float


class StatisticsResult(_Result):
    count: int
    mean: float
    median: float
    stdev: float
    """Sample standard deviation (n - 1 in the denominator); 0 for a single value."""
    min: float
    max: float
    percentiles: list[PercentileValue]
    """Linear interpolation between closest ranks (numpy's default method)."""


class Trend(_Result):
    """Least-squares line through (index, value)."""

    slope: float
    intercept: float
    r_squared: float
    direction: Literal["up", "down", "flat"]


class Anomaly(_Result):
    index: int
    value: float
    score: float | None
    """z-score (zscore), or distance from the nearer quartile in IQRs (iqr: positive above Q3,
    negative below Q1, None if the IQR is 0); an anomaly's |score| exceeds the threshold."""


class PatternResult(_Result):
    count: int
    method: str
    threshold: float
    lower_bound: float
    upper_bound: float
    """Values outside [lower_bound, upper_bound] are anomalies."""
    trend: Trend
    anomaly_count: int
    anomalies: list[Anomaly]
    """The first `MAX_REPORTED_ANOMALIES` anomalies by index."""
    truncated: bool


def _number(value: object, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PermanentTaskError(f"{where} is {_show(value)}, not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise PermanentTaskError(f"{where} is {value}, not a finite number")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def aggregate(
    records: Sequence[Mapping[str, Any]], group_by: str, field: str, function: str = "sum"
) -> AggregateResult:
    """Group records by the value of `group_by` and aggregate `field` in each group.

    Every record needs both fields; `field` must be a finite number unless `function` is
    `count`. Group keys are JSON scalars (strings, numbers, booleans, null).
    """
    if function not in AGGREGATES:
        raise PermanentTaskError(
            f"unknown aggregate function {function!r}; use one of {', '.join(AGGREGATES)}"
        )
    if not records:
        raise PermanentTaskError("there are no records to aggregate")
    keys: dict[tuple[bool, JsonScalar], JsonScalar] = {}
    values: dict[tuple[bool, JsonScalar], list[int | float]] = {}
    counts: dict[tuple[bool, JsonScalar], int] = {}
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise PermanentTaskError(f"record {index} is {_show(record)}, not an object")
        if group_by not in record:
            raise PermanentTaskError(f"record {index} has no {group_by!r} field to group by")
        key = record[group_by]
        if not isinstance(key, str | int | float | bool | None):
            raise PermanentTaskError(
                f"record {index}: {group_by!r} is {_show(key)}; group keys must be strings, "
                "numbers, booleans or null"
            )
        if isinstance(key, float) and not math.isfinite(key):
            raise PermanentTaskError(f"record {index}: {group_by!r} is {key}, not a finite number")
        if field not in record:
            raise PermanentTaskError(f"record {index} has no {field!r} field to aggregate")
        # True == 1 in Python; keep booleans and numbers in separate groups.
        slot = (isinstance(key, bool), key)
        if slot not in keys:
            keys[slot] = key
            values[slot] = []
            counts[slot] = 0
        counts[slot] += 1
        if function != "count":
            values[slot].append(_number(record[field], f"record {index}: {field!r}"))
    groups = [
        Group(key=key, count=counts[slot], value=_aggregate(function, values[slot], counts[slot]))
        for slot, key in keys.items()
    ]
    return AggregateResult(group_by=group_by, field=field, function=function, groups=groups)


def _aggregate(function: str, values: list[int | float], count: int) -> int | float:
    if function == "count":
        return count
    if function == "min":
        return min(values)
    if function == "max":
        return max(values)
    if all(isinstance(value, int) for value in values):
        total: int | float = sum(values)
    else:
        total = math.fsum(values)
    if function == "mean":
        total = total / len(values)
    if isinstance(total, float) and not math.isfinite(total):
        raise PermanentTaskError(f"the {function} overflows: the values are too large")
    return total


def as_series(values: Iterable[float], what: str = "values") -> FloatArray:
    """The values as a float array; empty input or a non-finite value is a permanent failure."""
    items = values if isinstance(values, np.ndarray) else list(values)
    try:
        array = np.asarray(items)
    except (TypeError, ValueError) as exc:
        raise PermanentTaskError(f"{what} must be a flat list of numbers: {exc}") from exc
    if array.size and array.dtype.kind not in "iuf":
        originals = items.ravel().tolist() if isinstance(items, np.ndarray) else items
        for index, item in enumerate(originals):
            _number(item, f"{what}[{index}]")
        raise PermanentTaskError(f"{what} must be a flat list of numbers within float range")
    array = array.astype(np.float64)
    if array.ndim != 1:
        raise PermanentTaskError(f"{what} must be a flat list of numbers within float range")
    if array.size == 0:
        raise PermanentTaskError(f"there are no {what} to analyse")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        first = int(bad[0])
        raise PermanentTaskError(
            f"{what} must be finite numbers: index {first} is {array[first]}"
            + (f" ({bad.size} non-finite values in all)" if bad.size > 1 else "")
        )
    return array


def _finite(what: str, *numbers: float) -> None:
    if not all(math.isfinite(number) for number in numbers):
        raise PermanentTaskError(f"the {what} overflows: the values are too large")


def describe(
    values: Iterable[float], percentiles: Iterable[float] = DEFAULT_PERCENTILES
) -> StatisticsResult:
    """Count, mean, median, sample standard deviation, min, max and percentiles."""
    series = as_series(values)
    wanted = [float(p) for p in percentiles]
    for p in wanted:
        if not 0.0 <= p <= 100.0:
            raise PermanentTaskError(f"percentile {p} is outside 0..100")
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(np.mean(series))
        median = float(np.median(series))
        stdev = float(np.std(series, ddof=1)) if series.size > 1 else 0.0
        points = [float(v) for v in np.percentile(series, wanted)] if wanted else []
    _finite("statistics", mean, median, stdev, *points)
    return StatisticsResult(
        count=int(series.size),
        mean=mean,
        median=median,
        stdev=stdev,
        min=float(series.min()),
        max=float(series.max()),
        percentiles=[
            PercentileValue(percentile=p, value=v) for p, v in zip(wanted, points, strict=True)
        ],
    )


def trend(series: FloatArray) -> Trend:
    """The least-squares line through (index, value) and its direction.

    The direction is up or down when the slope is at least `TREND_T_CUTOFF` standard errors
    away from zero (roughly 95% confidence), flat otherwise. With two points it is the sign
    of the slope; with one point it is flat.
    """
    n = int(series.size)
    if n == 1:
        return Trend(slope=0.0, intercept=float(series[0]), r_squared=0.0, direction="flat")
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.arange(n, dtype=np.float64)
        x_mean = (n - 1) / 2.0
        y_mean = float(np.mean(series))
        xc = x - x_mean
        yc = series - y_mean
        sxx = float(np.dot(xc, xc))
        slope = float(np.dot(xc, yc)) / sxx
        intercept = y_mean - slope * x_mean
        residuals = yc - slope * xc
        sse = float(np.dot(residuals, residuals))
        sst = float(np.dot(yc, yc))
    _finite("trend", slope, intercept, sse, sst)
    r_squared = max(0.0, 1.0 - sse / sst) if sst > 0 else 0.0
    negligible = abs(slope) * (n - 1) <= 1e-12 * max(1.0, float(np.max(np.abs(series))))
    direction: Literal["up", "down", "flat"]
    if negligible:
        direction = "flat"
    elif n == 2 or sse == 0.0:
        direction = "up" if slope > 0 else "down"
    else:
        stderr = math.sqrt(sse / (n - 2) / sxx)
        t = slope / stderr
        direction = "flat" if abs(t) < TREND_T_CUTOFF else ("up" if t > 0 else "down")
    return Trend(slope=slope, intercept=intercept, r_squared=r_squared, direction=direction)


def detect_patterns(
    values: Iterable[float],
    method: str = "zscore",
    threshold: float = 3.0,
    *,
    max_reported: int = MAX_REPORTED_ANOMALIES,
) -> PatternResult:
    """The trend of a series and its anomalies.

    zscore: values with |value - mean| / stdev > threshold (population stdev; none if it is
    0). iqr: values outside [Q1 - threshold * IQR, Q3 + threshold * IQR].
    """
    if method not in METHODS:
        raise PermanentTaskError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if not (math.isfinite(threshold) and threshold > 0):
        raise PermanentTaskError(f"threshold must be a positive number, got {threshold}")
    series = as_series(values)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if method == "zscore":
            mean = float(np.mean(series))
            std = float(np.std(series))
            _finite("z-score", mean, std)
            lower, upper = mean - threshold * std, mean + threshold * std
            if std > 0:
                scores: FloatArray = (series - mean) / std
                flagged = np.flatnonzero(np.abs(scores) > threshold)
            else:
                scores = np.zeros_like(series)
                flagged = np.flatnonzero(np.zeros(series.size, dtype=bool))
        else:
            q1, q3 = (float(q) for q in np.percentile(series, [25.0, 75.0]))
            iqr = q3 - q1
            lower, upper = q1 - threshold * iqr, q3 + threshold * iqr
            _finite("interquartile range", lower, upper)
            flagged = np.flatnonzero((series < lower) | (series > upper))
            if iqr > 0:
                scores = np.where(series > q3, (series - q3) / iqr, (series - q1) / iqr)
            else:
                scores = np.full(series.size, np.nan)
    anomalies = [
        Anomaly(
            index=int(i),
            value=float(series[i]),
            score=float(scores[i]) if math.isfinite(float(scores[i])) else None,
        )
        for i in flagged[:max_reported]
    ]
    return PatternResult(
        count=int(series.size),
        method=method,
        threshold=threshold,
        lower_bound=lower,
        upper_bound=upper,
        trend=trend(series),
        anomaly_count=int(flagged.size),
        anomalies=anomalies,
        truncated=bool(flagged.size > max_reported),
    )
