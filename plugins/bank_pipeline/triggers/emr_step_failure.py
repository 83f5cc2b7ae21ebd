"""The Amazon provider's EMR step trigger, ending with an error event on every provider version.

EmrStepSensorWithLogs explains a failed step in ``execute_complete`` (FailureDetails, the cluster's
state, the logs' tails); the provider's trigger before 9.25 raises instead of yielding the event,
and the task would fail with the waiter's text only (bank_pipeline.utils.compat.WaiterFailureEvent).
"""

from __future__ import annotations

from airflow.providers.amazon.aws.triggers.emr import EmrStepSensorTrigger

from bank_pipeline.utils.compat import WaiterFailureEvent


class EmrStepFailureEventTrigger(WaiterFailureEvent, EmrStepSensorTrigger):
    """EmrStepSensorTrigger whose waiter failure is an ``{"status": "error"}`` event, never an exception."""
