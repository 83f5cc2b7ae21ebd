"""devstack's CloudWatch judges metric alarms on their data, which moto never does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from moto.cloudwatch.models import Alarm, CloudWatchBackend

from devstack.aws import cloudwatch_alarms, lambda_metrics

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 7, 12, 0, 0)
FN = [{"Name": "FunctionName", "Value": "bank"}]


@pytest.fixture
def backend() -> CloudWatchBackend:
    cloudwatch_alarms.install()
    lambda_metrics.install()
    return CloudWatchBackend("us-east-1", "123456789012")


def put(backend: CloudWatchBackend, value: float, seconds_ago: float, name: str = "Errors", dims: Any = FN) -> None:
    moment = NOW - timedelta(seconds=seconds_ago)
    backend.put_metric_data(
        "AWS/Lambda", [{"MetricName": name, "Value": value, "Dimensions": dims, "Timestamp": moment}]
    )


def alarm(backend: CloudWatchBackend, **kwargs: Any) -> Alarm:
    spec: dict[str, Any] = {
        "name": "bank-errors", "namespace": "AWS/Lambda", "metric_name": "Errors", "statistic": "Sum", "period": 60,
        "evaluation_periods": 1, "threshold": 1.0, "comparison_operator": "GreaterThanOrEqualToThreshold",
        "description": "", "dimensions": FN, "alarm_actions": [],
    }  # fmt: skip
    return backend.put_metric_alarm(**{**spec, **kwargs})


def state(backend: CloudWatchBackend, name: str = "bank-errors", now: datetime = NOW) -> str:
    found = backend.alarms[name]
    cloudwatch_alarms.evaluate(backend, found, now)
    return str(found.state_value)


def test_an_alarm_goes_to_alarm_when_its_period_breaches_and_says_with_which_datapoint(
    backend: CloudWatchBackend,
) -> None:
    alarm(backend)
    assert state(backend) == "INSUFFICIENT_DATA"  # moto leaves a new alarm OK whatever its data
    put(backend, 0, 30)
    assert state(backend) == "OK"
    put(backend, 1, 10)
    assert state(backend) == "ALARM"
    assert backend.alarms["bank-errors"].state_reason == (
        "Threshold Crossed: 1 out of the last 1 datapoints [1] were greater than or equal to the threshold (1)"
    )
    assert state(backend, now=NOW + timedelta(seconds=120)) == "INSUFFICIENT_DATA"  # the period has passed


def test_the_metric_is_its_whole_dimension_set_not_any_datum_carrying_those_dimensions(
    backend: CloudWatchBackend,
) -> None:
    alarm(backend)
    put(backend, 1, 10, dims=[*FN, {"Name": "Resource", "Value": "bank:live"}])
    assert state(backend) == "INSUFFICIENT_DATA"
    alarm(backend, name="bank-live-errors", dimensions=[*FN, {"Name": "Resource", "Value": "bank:live"}])
    assert state(backend, "bank-live-errors") == "ALARM"


def test_datapoints_to_alarm_counts_breaching_periods_among_the_evaluated_ones(backend: CloudWatchBackend) -> None:
    alarm(backend, evaluation_periods=3, datapoints_to_alarm=2)
    put(backend, 1, 150)
    put(backend, 0, 90)
    assert state(backend) == "OK"
    put(backend, 3, 20)
    assert state(backend) == "ALARM"


@pytest.mark.parametrize(
    ("treat", "expected"),
    [("missing", "INSUFFICIENT_DATA"), ("breaching", "ALARM"), ("notBreaching", "OK"), ("ignore", "OK")],
)
def test_missing_data_is_treated_as_the_alarm_says(backend: CloudWatchBackend, treat: str, expected: str) -> None:
    alarm(backend, treat_missing_data=treat)  # "ignore" keeps the state it has: moto's initial OK
    assert state(backend) == expected


def test_an_extended_statistic_is_a_percentile_of_the_periods_values(backend: CloudWatchBackend) -> None:
    alarm(backend, name="bank-p99", metric_name="Duration", statistic=None, extended_statistic="p99", threshold=500.0,
          comparison_operator="GreaterThanThreshold")  # fmt: skip
    for value in range(1, 100):
        put(backend, float(value), 5, name="Duration")
    assert state(backend, "bank-p99") == "OK"
    put(backend, 900.0, 5, name="Duration")
    put(backend, 950.0, 5, name="Duration")
    assert state(backend, "bank-p99") == "ALARM"


def test_a_state_set_by_hand_lasts_until_the_data_says_otherwise(backend: CloudWatchBackend) -> None:
    alarm(backend)
    backend.set_alarm_state("bank-errors", "drill", "{}", "ALARM")
    assert state(backend) == "ALARM"  # still no data: the verdict has not changed
    put(backend, 0, 10)
    assert state(backend) == "OK"


def test_zoned_timestamps_count_like_utc_ones(backend: CloudWatchBackend) -> None:
    alarm(backend)
    moment = (NOW - timedelta(seconds=10)).replace(tzinfo=UTC)
    backend.put_metric_data("AWS/Lambda", [{"MetricName": "Errors", "Value": 1, "Dimensions": FN, "Timestamp": moment}])
    assert state(backend) == "ALARM"


def test_an_alarm_devstack_cannot_judge_keeps_its_state(backend: CloudWatchBackend) -> None:
    alarm(backend, comparison_operator="LessThanLowerOrGreaterThanUpperThreshold")
    put(backend, 5, 10)
    assert state(backend) == "OK"
