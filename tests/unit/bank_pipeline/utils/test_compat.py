"""Waiter triggers end with an error event on every Amazon provider (bank_pipeline.utils.compat.WaiterFailureEvent).

MWAA 3.0.6's provider (9.12) raises from the trigger when the waiter meets a failure state; the
sensor's execute_complete (the step's FailureDetails, the logs' tails) then never runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from airflow.exceptions import AirflowException, TaskDeferred
from airflow.providers.amazon.aws.triggers.emr import EmrStepSensorTrigger
from airflow.triggers.base import TriggerEvent

from bank_pipeline.sensors import emr_step as sensors
from bank_pipeline.sensors.emr_step import EmrStepSensorWithLogs
from bank_pipeline.triggers.emr_step_failure import EmrStepFailureEventTrigger
from bank_pipeline.utils.compat import WaiterFailureEvent

pytestmark = pytest.mark.unit


class OldProviderTrigger:
    """What provider 9.12's AwsBaseWaiterTrigger.run does when the waiter meets a failure state."""

    return_key = "value"
    return_value = "j-1"

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if self.fail:
            raise AirflowException("Error while waiting for step s-1 to complete: FAILED - {'Reason': 'exit code 1'}")
        yield TriggerEvent({"status": "success", "value": "j-1"})


class Wrapped(WaiterFailureEvent, OldProviderTrigger):
    pass


def events(trigger: Any) -> list[Any]:
    async def collect() -> list[Any]:
        return [event.payload async for event in trigger.run()]

    # A thread of its own: another test's plugin may leave an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, collect()).result()


def test_a_failure_the_old_provider_raises_becomes_the_error_event() -> None:
    assert events(Wrapped(fail=True)) == [
        {
            "status": "error",
            "message": "Error while waiting for step s-1 to complete: FAILED - {'Reason': 'exit code 1'}",
            "value": "j-1",
        }
    ]


def test_the_providers_own_events_pass_unchanged() -> None:
    assert events(Wrapped(fail=False)) == [{"status": "success", "value": "j-1"}]


def test_the_emr_trigger_serializes_to_itself_for_the_triggerer() -> None:
    trigger = EmrStepFailureEventTrigger(job_flow_id="j-1", step_id="s-1", waiter_delay=2, waiter_max_attempts=3)
    path, kwargs = trigger.serialize()

    assert path == "bank_pipeline.triggers.emr_step_failure.EmrStepFailureEventTrigger"
    assert EmrStepFailureEventTrigger(**kwargs).serialize() == (path, kwargs)


@pytest.mark.parametrize(
    ("provider", "expected"), [("9.12.0", EmrStepFailureEventTrigger), ("9.25.0", EmrStepSensorTrigger)]
)
def test_the_sensor_defers_to_the_failure_event_trigger_only_on_providers_that_raise(
    provider: str, expected: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sensors, "amazon_version", provider)
    sensor = EmrStepSensorWithLogs(
        task_id="wait", job_flow_id="j-1", step_id="s-1", deferrable=True, poke_interval=2, max_attempts=3
    )
    monkeypatch.setattr(sensor, "poke", lambda context: False)

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})  # type: ignore[arg-type]

    assert type(deferred.value.trigger) is expected
    assert deferred.value.trigger.serialize()[1]["step_id"] == "s-1"
    assert deferred.value.method_name == "execute_complete"
