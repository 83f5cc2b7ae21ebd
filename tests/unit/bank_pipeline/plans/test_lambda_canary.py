"""A Lambda canary's decisions: a strategy's traffic steps, its CloudWatch queries, and the verdict."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bank_pipeline.errors import BadInputError
from bank_pipeline.plans import lambda_canary as plan

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("kind", "percent", "shares"),
    [
        ("all_at_once", 10, ()),
        ("canary", 10, (0.1,)),
        ("linear", 25, (0.25, 0.5, 0.75)),
        ("linear", 30, (0.3, 0.6, 0.9)),
    ],
)
def test_a_strategy_is_its_traffic_steps(kind: str, percent: float, shares: tuple[float, ...]) -> None:
    assert plan.strategy(kind, percent=percent, bake_seconds=60).shares == shares


@pytest.mark.parametrize(
    ("kind", "percent", "bake", "message"),
    [
        ("blue_green", 10, 60, "release_strategy='blue_green': expected one of all_at_once, canary, linear"),
        ("canary", 0, 60, "canary_percent=0: expected more than 0 and less than 100"),
        ("linear", 100, 60, "canary_percent=100: expected more than 0 and less than 100"),
        ("canary", 10, -1, "bake_seconds=-1: expected 0 to 86400"),
    ],
)
def test_a_wrong_strategy_is_refused_naming_the_param(kind: str, percent: float, bake: float, message: str) -> None:
    with pytest.raises(BadInputError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        plan.strategy(kind, percent=percent, bake_seconds=bake)


def test_the_queries_read_the_new_version_on_the_alias() -> None:
    queries = plan.metric_queries("bank-model", "live", "7", 120)
    assert [q["Id"] for q in queries] == ["invocations", "errors", "throttles", "p99_ms"]
    stat = queries[3]["MetricStat"]
    assert (stat["Metric"]["MetricName"], stat["Stat"], stat["Period"]) == ("Duration", "p99", 120)
    assert stat["Metric"]["Dimensions"] == [
        {"Name": "FunctionName", "Value": "bank-model"},
        {"Name": "Resource", "Value": "bank-model:live"},
        {"Name": "ExecutedVersion", "Value": "7"},
    ]


def test_the_answers_add_up_and_the_worst_p99_counts() -> None:
    results = [
        {"Id": "invocations", "Values": [10.0, 5.0]},
        {"Id": "errors", "Values": [1.0]},
        {"Id": "throttles", "Values": []},
        {"Id": "p99_ms", "Values": [120.0, 300.0]},
    ]
    assert plan.metrics_of(results) == plan.Metrics(invocations=15, errors=1, throttles=0, p99_ms=300.0)
    assert plan.metrics_of([]).p99_ms is None


QUIET = plan.Metrics(invocations=100, errors=2, throttles=0, p99_ms=80.0)


@pytest.mark.parametrize(
    ("metrics", "thresholds", "alarms", "verdict"),
    [
        (QUIET, plan.Thresholds(), {}, None),
        (plan.Metrics(0, 0, 0, None), plan.Thresholds(), {}, None),  # no traffic yet: nothing crossed
        (plan.Metrics(20, 4, 0, 50.0), plan.Thresholds(), {},
         "Errors 4 of 20 invocations (20.0%) above the 5.0% allowed"),
        (plan.Metrics(100, 0, 3, 50.0), plan.Thresholds(), {}, "Throttles 3 above the 0 allowed"),
        (QUIET, plan.Thresholds(max_p99_ms=50), {}, "Duration p99 80.0 ms above the 50 ms allowed"),
        (QUIET, plan.Thresholds(), {"bank-5xx": "OK", "bank-latency": "ALARM"}, "alarm bank-latency in ALARM"),
        (QUIET, plan.Thresholds(), {"no-such": None}, "alarm no-such does not exist"),
    ],
)  # fmt: skip
def test_the_verdict_names_the_metric_and_its_value(
    metrics: plan.Metrics, thresholds: plan.Thresholds, alarms: dict[str, str | None], verdict: str | None
) -> None:
    assert plan.breach(metrics, thresholds, alarms) == verdict


def test_the_window_covers_the_bake_in_whole_minutes() -> None:
    started = datetime(2026, 12, 7, 10, 0, 42, tzinfo=UTC)
    start, end, period = plan.window(started, datetime(2026, 12, 7, 10, 3, 5, tzinfo=UTC))
    assert start == datetime(2026, 12, 7, 10, 0, tzinfo=UTC) and period == 300 and end > started
