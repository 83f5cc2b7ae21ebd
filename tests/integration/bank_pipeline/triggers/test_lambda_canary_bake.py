"""LambdaCanaryTrigger against devstack: a version behind a weighted alias judged by the metrics its
invokes put into devstack's CloudWatch, while a client calls the alias."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bank_pipeline.triggers.lambda_canary_bake import LambdaCanaryTrigger
from devstack import Devstack
from devstack.harness.airflow_env import LAMBDA_ROLE_ARN
from tests.support.alias_traffic import FLAKY_HANDLER, clients, weighted_alias
from tests.support.devstack_image_helpers import model_image

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def images(ds: Devstack, account: Any) -> dict[str, str]:
    pushed = {
        "v1": model_image(ds.registry_url, "v1", repo="canary"),
        "v2": model_image(ds.registry_url, "v2", repo="canary"),
        "flaky": model_image(ds.registry_url, "v3", repo="canary", handler=FLAKY_HANDLER),
    }
    return {name: f"{ds.registry_url}/canary@{image.digest}" for name, image in pushed.items()}


@pytest.fixture
def aws_env(ds: Devstack, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ds.env().items():
        monkeypatch.setenv(key, value)


def bake(name: str, seconds: float, started: float | None = None, **kwargs: Any) -> tuple[dict[str, Any], float]:
    """One bake of ``seconds`` begun at ``started`` (now by default); the event and the seconds since ``started``."""
    started = time.time() if started is None else started
    trigger = LambdaCanaryTrigger(
        function_name=name, alias="live", version="2", started_at=started, bake_seconds=seconds,
        poll_interval=0.5, aws_conn_id=None, **kwargs,
    )  # fmt: skip
    event = asyncio.run(trigger.bake())
    return event, time.time() - started


def test_a_version_failing_one_request_in_five_is_breached_during_its_bake_naming_the_metric(
    aws_env: None, ds: Devstack, images: dict[str, str]
) -> None:
    name = weighted_alias(ds.client("lambda"), LAMBDA_ROLE_ARN, images["v1"], images["flaky"], 0.5)
    with clients(ds, name) as served:
        event, took = bake(name, 60)
    assert event["status"] == "breached", event
    assert event["message"].startswith("Errors ") and "above the 5.0% allowed" in event["message"]
    assert event["metrics"]["errors"] >= 1 and served["2"] >= event["metrics"]["invocations"]
    assert took < 30  # judged as soon as the threshold was crossed, not at the end of the bake


def test_a_good_version_passes_its_bake_on_its_own_invocations(
    aws_env: None, ds: Devstack, images: dict[str, str]
) -> None:
    name = weighted_alias(ds.client("lambda"), LAMBDA_ROLE_ARN, images["v1"], images["v2"], 0.5)
    # The step begins before the clients, as the operator's does when it sets the weights: every one of
    # their invocations falls in the bake's window even when a minute turns while they call.
    started = time.time()
    with clients(ds, name) as served:
        time.sleep(3)
    event, took = bake(name, 5, started=started)
    assert event["status"] == "passed", event
    assert event["metrics"]["invocations"] == served["2"] > 0 and event["metrics"]["errors"] == 0
    assert event["metrics"]["p99_ms"] > 0 and took >= 5


def test_a_named_alarm_in_alarm_or_missing_fails_the_step(aws_env: None, ds: Devstack, images: dict[str, str]) -> None:
    name = weighted_alias(ds.client("lambda"), LAMBDA_ROLE_ARN, images["v1"], images["v2"], 0.1)
    cloudwatch = ds.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName=f"{name}-errors", Namespace="AWS/Lambda", MetricName="Errors", Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold",
        Dimensions=[{"Name": "FunctionName", "Value": name}],
    )  # fmt: skip
    event, _ = bake(name, 1, alarm_names=[f"{name}-errors"])
    assert event["status"] == "passed", event  # INSUFFICIENT_DATA is not ALARM
    cloudwatch.set_alarm_state(AlarmName=f"{name}-errors", StateValue="ALARM", StateReason="test")
    event, _ = bake(name, 1, alarm_names=[f"{name}-errors"])
    assert (event["status"], event["message"]) == ("breached", f"alarm {name}-errors in ALARM")
    event, _ = bake(name, 1, alarm_names=["no-such-alarm"])
    assert event["message"] == "alarm no-such-alarm does not exist"


def test_an_alarm_on_the_new_versions_errors_fires_from_its_invocations_and_breaches_the_bake(
    aws_env: None, ds: Devstack, images: dict[str, str]
) -> None:
    name = weighted_alias(ds.client("lambda"), LAMBDA_ROLE_ARN, images["v1"], images["flaky"], 0.5)
    cloudwatch, alarm = ds.client("cloudwatch"), f"{name}-canary-errors"
    cloudwatch.put_metric_alarm(
        AlarmName=alarm, Namespace="AWS/Lambda", MetricName="Errors", Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold",
        Dimensions=[{"Name": "FunctionName", "Value": name}, {"Name": "Resource", "Value": f"{name}:live"},
                    {"Name": "ExecutedVersion", "Value": "2"}],
    )  # fmt: skip
    assert cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["StateValue"] == "INSUFFICIENT_DATA"
    # The error rate alone may not cross a limit of 100 %: the alarm is what stops this bake.
    with clients(ds, name):
        event, took = bake(name, 60, alarm_names=[alarm], thresholds={"max_error_rate": 1.0})
    assert (event["status"], event["message"]) == ("breached", f"alarm {alarm} in ALARM"), event
    found = cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]
    assert found["StateValue"] == "ALARM" and found["StateReason"].startswith("Threshold Crossed: 1 out of the last 1")
    assert took < 30
