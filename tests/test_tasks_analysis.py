"""Data analysis against hand-computed numbers."""

from __future__ import annotations

import math
from typing import Any

import pytest

from workloads import analysis
from workloads.errors import PermanentTaskError

pytestmark = pytest.mark.timeout(60)

# --- statistics --------------------------------------------------------------------------


def test_statistics_of_a_hand_computed_case() -> None:
    # Sorted: 2 4 4 4 5 5 7 9. Mean 40/8 = 5; median (4 + 5) / 2 = 4.5;
    # squared deviations 9+1+1+1+0+0+4+16 = 32, sample variance 32/7.
    # Percentile p sits at rank 7 * p / 100 between neighbours (linear interpolation):
    # p25 -> rank 1.75: 4 + 0.75 * (4 - 4) = 4;  p75 -> rank 5.25: 5 + 0.25 * (7 - 5) = 5.5;
    # p95 -> rank 6.65: 7 + 0.65 * (9 - 7) = 8.3; p10 -> rank 0.7: 2 + 0.7 * (4 - 2) = 3.4.
    result = analysis.describe([9, 2, 5, 4, 7, 4, 5, 4], percentiles=[0, 10, 25, 50, 75, 95, 100])
    assert result.count == 8
    assert result.mean == 5.0
    assert result.median == 4.5
    assert result.stdev == pytest.approx(math.sqrt(32 / 7))  # 2.13808993...
    assert (result.min, result.max) == (2.0, 9.0)
    assert [(p.percentile, p.value) for p in result.percentiles] == [
        (0.0, 2.0),
        (10.0, pytest.approx(3.4)),
        (25.0, 4.0),
        (50.0, 4.5),
        (75.0, 5.5),
        (95.0, pytest.approx(8.3)),
        (100.0, 9.0),
    ]


def test_statistics_default_percentiles_and_one_value() -> None:
    result = analysis.describe([3.5])
    assert (result.count, result.mean, result.median, result.stdev) == (1, 3.5, 3.5, 0.0)
    assert [p.percentile for p in result.percentiles] == [25.0, 50.0, 75.0, 95.0]
    assert all(p.value == 3.5 for p in result.percentiles)


def test_statistics_result_is_json_ready() -> None:
    dumped = analysis.describe([1, 2]).model_dump(mode="json")
    assert dumped["stdev"] == pytest.approx(math.sqrt(0.5))
    assert dumped["percentiles"][0] == {"percentile": 25.0, "value": 1.25}


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([], r"there are no values to analyse"),
        ([1.0, math.nan, 2.0], r"finite numbers: index 1 is nan"),
        ([math.inf, 1.0, -math.inf], r"index 0 is inf \(2 non-finite values in all\)"),
        ([1, "2"], r"values\[1\] is '2', not a number"),
        ([1, None], r"values\[1\] is None, not a number"),
    ],
)
def test_bad_series_are_permanent(values: list[Any], reason: str) -> None:
    with pytest.raises(PermanentTaskError, match=reason):
        analysis.describe(values)
    with pytest.raises(PermanentTaskError, match=reason):
        analysis.detect_patterns(values)


def test_statistics_overflow_is_permanent() -> None:
    with pytest.raises(PermanentTaskError, match=r"overflows"):
        analysis.describe([1e308, 1e308, -1e308])


def test_percentile_out_of_range_is_permanent() -> None:
    with pytest.raises(PermanentTaskError, match=r"percentile 101.0 is outside 0..100"):
        analysis.describe([1, 2], percentiles=[50, 101])


# --- aggregate ---------------------------------------------------------------------------

SALES: list[dict[str, Any]] = [
    {"region": "north", "amount": 10},
    {"region": "south", "amount": 2.5},
    {"region": "north", "amount": 30},
    {"region": "east", "amount": -4},
    {"region": "south", "amount": 7.5},
    {"region": "north", "amount": 20},
]


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("sum", {"north": 60, "south": 10.0, "east": -4}),
        ("mean", {"north": 20.0, "south": 5.0, "east": -4.0}),
        ("count", {"north": 3, "south": 2, "east": 1}),
        ("min", {"north": 10, "south": 2.5, "east": -4}),
        ("max", {"north": 30, "south": 7.5, "east": -4}),
    ],
)
def test_aggregate(function: str, expected: dict[str, float]) -> None:
    result = analysis.aggregate(SALES, "region", "amount", function)
    assert (result.group_by, result.field, result.function) == ("region", "amount", function)
    # Groups come in the order their key first appears.
    assert [group.key for group in result.groups] == ["north", "south", "east"]
    assert {group.key: group.value for group in result.groups} == expected
    assert {group.key: group.count for group in result.groups} == {
        "north": 3,
        "south": 2,
        "east": 1,
    }


def test_aggregate_sum_of_integers_stays_integer() -> None:
    result = analysis.aggregate(SALES, "region", "amount", "sum")
    dumped = result.model_dump(mode="json")
    assert dumped["groups"][0] == {"key": "north", "count": 3, "value": 60}
    assert isinstance(dumped["groups"][0]["value"], int)


def test_aggregate_keys_keep_their_json_type() -> None:
    records: list[dict[str, Any]] = [
        {"k": 1, "v": 1},
        {"k": True, "v": 2},
        {"k": None, "v": 3},
        {"k": 1.0, "v": 4},
        {"k": "1", "v": 5},
    ]
    result = analysis.aggregate(records, "k", "v", "sum")
    assert [(group.key, group.value) for group in result.groups] == [
        (1, 5),
        (True, 2),
        (None, 3),
        ("1", 5),
    ]
    assert result.model_dump(mode="json")["groups"][1]["key"] is True


def test_count_does_not_need_numbers() -> None:
    records: list[dict[str, Any]] = [{"g": "a", "v": "x"}, {"g": "a", "v": None}]
    assert analysis.aggregate(records, "g", "v", "count").groups[0].value == 2


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ([], r"there are no records to aggregate"),
        ([{"g": "a", "v": 1}, {"v": 2}], r"record 1 has no 'g' field to group by"),
        ([{"g": "a", "v": 1}, {"g": "b"}], r"record 1 has no 'v' field to aggregate"),
        ([{"g": "a", "v": 1}, {"g": "a", "v": "7"}], r"record 1: 'v' is '7', not a number"),
        ([{"g": "a", "v": False}], r"record 0: 'v' is False, not a number"),
        ([{"g": "a", "v": 1}, {"g": "a", "v": math.nan}], r"record 1: 'v' is nan, not a finite"),
        ([{"g": ["a"], "v": 1}], r"record 0: 'g' is \['a'\]; group keys must be"),
        ([{"g": "a", "v": 1}, 5], r"record 1 is 5, not an object"),
    ],
)
def test_bad_records_are_permanent_and_named(records: list[Any], reason: str) -> None:
    with pytest.raises(PermanentTaskError, match=reason):
        analysis.aggregate(records, "g", "v", "sum")


def test_unknown_function_is_permanent() -> None:
    with pytest.raises(PermanentTaskError, match=r"unknown aggregate function 'median'"):
        analysis.aggregate(SALES, "region", "amount", "median")


# --- trend -------------------------------------------------------------------------------


def test_trend_of_a_straight_line() -> None:
    result = analysis.detect_patterns([3 + 2 * i for i in range(10)])
    assert result.trend.slope == pytest.approx(2.0)
    assert result.trend.intercept == pytest.approx(3.0)
    assert result.trend.r_squared == pytest.approx(1.0)
    assert result.trend.direction == "up"


def test_trend_of_a_noisy_decline() -> None:
    noise = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0, -0.1, 0.3, -0.3, 0.1]
    values = [50 - 1.5 * i + n for i, n in enumerate(noise)]
    result = analysis.detect_patterns(values)
    assert result.trend.slope == pytest.approx(-1.5, abs=0.1)
    assert result.trend.direction == "down"


@pytest.mark.parametrize(
    "values",
    [
        [4.0] * 12,
        [1.0, -1.0] * 10,  # zig-zag: the fitted slope is far inside its own noise
        [7.0],
    ],
)
def test_flat_trends(values: list[float]) -> None:
    assert analysis.detect_patterns(values).trend.direction == "flat"


def test_two_points_follow_the_slope() -> None:
    assert analysis.detect_patterns([1, 0.5]).trend.direction == "down"


# --- anomalies ---------------------------------------------------------------------------


def test_zscore_anomaly_hand_computed() -> None:
    # Nine zeros and a ten: mean 1, population variance (9 * 1 + 81) / 10 = 9, stdev 3,
    # so the ten has z = (10 - 1) / 3 = 3 and each zero z = -1/3.
    values = [0.0] * 9 + [10.0]
    flagged = analysis.detect_patterns(values, "zscore", 2.5)
    assert [(a.index, a.value, a.score) for a in flagged.anomalies] == [(9, 10.0, 3.0)]
    assert (flagged.lower_bound, flagged.upper_bound) == (1 - 7.5, 1 + 7.5)
    assert flagged.anomaly_count == 1
    # |z| > threshold is strict: z = 3 is not an anomaly at threshold 3.
    assert analysis.detect_patterns(values, "zscore", 3.0).anomalies == []


def test_zscore_on_a_trend_with_spikes() -> None:
    values = [10 + 0.5 * i for i in range(40)]
    values[12] = 90.0
    values[31] = -60.0
    result = analysis.detect_patterns(values, "zscore", 3.0)
    assert [a.index for a in result.anomalies] == [12, 31]
    assert result.anomalies[0].score is not None and result.anomalies[0].score > 3
    assert result.anomalies[1].score is not None and result.anomalies[1].score < -3


def test_iqr_anomaly_hand_computed() -> None:
    # Sorted 1..10, 100 (n = 11): Q1 at rank 2.5 = 3.5, Q3 at rank 7.5 = 8.5, IQR 5;
    # k = 1.5 gives fences 3.5 - 7.5 = -4 and 8.5 + 7.5 = 16; the 100 is (100 - 8.5) / 5 = 18.3
    # IQRs above Q3.
    values = [float(v) for v in range(1, 11)] + [100.0]
    result = analysis.detect_patterns(values, "iqr", 1.5)
    assert (result.lower_bound, result.upper_bound) == (-4.0, 16.0)
    assert [(a.index, a.value) for a in result.anomalies] == [(10, 100.0)]
    assert result.anomalies[0].score == pytest.approx(18.3)


def test_iqr_catches_low_outliers() -> None:
    values = [5.0, 6.0, 5.5, -30.0, 6.5, 5.0, 6.0, 5.5]
    result = analysis.detect_patterns(values, "iqr", 3.0)
    assert [a.index for a in result.anomalies] == [3]
    assert result.anomalies[0].score is not None and result.anomalies[0].score < -3


def test_constant_series_has_no_anomalies() -> None:
    for method in analysis.METHODS:
        result = analysis.detect_patterns([2.0] * 20, method, 1.0)
        assert result.anomalies == [] and result.anomaly_count == 0


def test_reported_anomalies_are_capped() -> None:
    values = [0.0] * 100 + [50.0] * 5
    result = analysis.detect_patterns(values, "zscore", 1.0, max_reported=3)
    assert result.anomaly_count == 5
    assert [a.index for a in result.anomalies] == [100, 101, 102]
    assert result.truncated


@pytest.mark.parametrize(
    ("method", "threshold", "reason"),
    [
        ("mad", 3.0, r"unknown method 'mad'"),
        ("zscore", 0.0, r"threshold must be a positive number"),
        ("iqr", math.nan, r"threshold must be a positive number"),
    ],
)
def test_bad_parameters_are_permanent(method: str, threshold: float, reason: str) -> None:
    with pytest.raises(PermanentTaskError, match=reason):
        analysis.detect_patterns([1, 2, 3], method, threshold)


def test_a_million_values_is_quick() -> None:
    values = [float(i % 1000) for i in range(1_000_000)]
    values[500_000] = 1e6
    result = analysis.detect_patterns(values, "zscore", 10.0)
    assert [a.index for a in result.anomalies] == [500_000]
    assert analysis.describe(values).count == 1_000_000
