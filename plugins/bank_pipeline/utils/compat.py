"""Airflow names that moved between Airflow 3.0 and 3.1, importable from one place on both.

MWAA's oldest Airflow 3 (3.0.6) forces apache-airflow-providers-common-compat 1.7.3, which
has no ``airflow.providers.common.compat.sdk``, and its task SDK (1.0) has no ``BaseHook``,
``timezone``, ``TaskInstanceKey`` or task exceptions under ``airflow.sdk``. Each name here is
taken from its Airflow 3.1+ home, else from Airflow 3.0's: the same pairs as common-compat's
``sdk`` module (XCom by version, as there: Airflow 3.0's API server reads links' XComs
through ``airflow.models``). Type checkers see the 3.1+ names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

__all__ = [
    "AIRFLOW_V_3_1_PLUS",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSkipException",
    "BaseHook",
    "BaseOperatorLink",
    "TaskInstanceKey",
    "XCom",
    "conf",
    "timezone",
]
