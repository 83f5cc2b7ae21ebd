"""Airflow names that moved between Airflow 3.0 and 3.1, importable from one place on both.

MWAA's oldest Airflow 3 (3.0.6) forces apache-airflow-providers-common-compat 1.7.3, which
has no ``airflow.providers.common.compat.sdk``, and its task SDK (1.0) has no ``BaseHook``,
``timezone``, ``TaskInstanceKey`` or task exceptions under ``airflow.sdk``. Each name here is
taken from its Airflow 3.1+ home, else from Airflow 3.0's: the same pairs as common-compat's
``sdk`` module (XCom by version, as there: Airflow 3.0's API server reads links' XComs
through ``airflow.models``). Type checkers see the 3.1+ names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import airflow
from packaging.version import Version

AIRFLOW_V_3_1_PLUS = Version(Version(airflow.__version__).base_version) >= Version("3.1.0")

if TYPE_CHECKING or AIRFLOW_V_3_1_PLUS:
    from airflow.sdk import BaseHook, BaseOperatorLink, timezone
    from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException, AirflowSkipException
    from airflow.sdk.execution_time.xcom import XCom
    from airflow.sdk.types import TaskInstanceKey
else:  # Airflow 3.0
    from airflow.exceptions import AirflowFailException, AirflowNotFoundException, AirflowSkipException
    from airflow.hooks.base import BaseHook
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.models.xcom import XCom
    from airflow.sdk import BaseOperatorLink
    from airflow.utils import timezone

try:
    from airflow.sdk.configuration import conf
except ImportError:  # Airflow 3.0 and 3.1
    from airflow.configuration import conf  # type: ignore[no-redef]


def xcom_outputs(values: dict[str, Any]) -> dict[str, Any]:
    """A ``multiple_outputs`` task's return value without its None values on Airflow 3.0, else unchanged.

    Airflow 3.0's task SDK cannot push an XCom whose value is None (its client posts no body; the
    execution API answers 422 and the task fails), and ``multiple_outputs`` pushes one per key.
    Pulling a key left out gives None there too.
    """
    if AIRFLOW_V_3_1_PLUS:
        return values
    return {key: value for key, value in values.items() if value is not None}


# apache-airflow-providers-amazon before apache/airflow#64085 (9.12, MWAA 3.0.6's, does; 9.25 no longer):
# its waiter triggers raise when the waiter meets a failure state instead of yielding an error event.
AMAZON_WAITER_FAILURE_EVENT_FROM = Version("9.25.0")


class WaiterFailureEvent:
    """Mixin for an AwsBaseWaiterTrigger: a failure the waiter meets ends it with an error event on every provider.

    Amazon providers before 9.25 raise it from ``run()`` instead: the triggerer then fails the task
    with the waiter's text and the operator's ``execute_complete`` (its explanation, its clean-up)
    never runs. Later providers yield ``{"status": "error", "message": ...}`` themselves, and this adds
    nothing.
    """

    async def run(self) -> AsyncIterator[Any]:
        from airflow.exceptions import AirflowException
        from airflow.triggers.base import TriggerEvent

        try:
            async for event in super().run():  # type: ignore[misc]
                yield event
        except AirflowException as error:
            yield TriggerEvent({"status": "error", "message": str(error), self.return_key: self.return_value})  # type: ignore[attr-defined]


__all__ = [
    "AIRFLOW_V_3_1_PLUS",
    "AMAZON_WAITER_FAILURE_EVENT_FROM",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSkipException",
    "BaseHook",
    "BaseOperatorLink",
    "TaskInstanceKey",
    "WaiterFailureEvent",
    "XCom",
    "conf",
    "timezone",
    "xcom_outputs",
]
