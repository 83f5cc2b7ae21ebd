"""Percentiles in devstack's CloudWatch, and the Duration an invoke's REPORT line gives."""

from __future__ import annotations

import pytest
from moto.cloudwatch.models import MetricDatum, Statistics

from devstack.aws import lambda_metrics

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("stat", "value"), [("p99", 99.0), ("p50", 50.0), ("p99.9", 100.0), ("p1", 1.0), ("Sum", 5050.0)]
)
def test_a_percentile_is_the_nearest_rank_of_the_periods_values(stat: str, value: float) -> None:
    lambda_metrics.install()
    stats = Statistics([stat], None)  # type: ignore[arg-type]
    stats.metric_data = [MetricDatum("AWS/Lambda", "Duration", float(v), [], None) for v in range(100, 0, -1)]
    assert stats.get_statistics_for_type(stat) == value


def test_no_values_is_no_percentile() -> None:
    lambda_metrics.install()
    assert Statistics(["p99"], None).get_statistics_for_type("p99") is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("log", "duration"),
    [
        ("START RequestId: a Version: 1\nREPORT RequestId: a\tDuration: 12.34 ms\tBilled Duration: 13 ms\n", 12.34),
        ("REPORT RequestId: a\tInit Duration: 500.00 ms\tDuration: 2.50 ms\tBilled Duration: 503 ms\n", 2.5),
        ("START RequestId: a Version: 1\ndevstack: cannot get image\nEND RequestId: a\n", None),
    ],
)
def test_the_duration_is_the_report_lines(log: str, duration: float | None) -> None:
    assert lambda_metrics.duration_ms(log) == duration
