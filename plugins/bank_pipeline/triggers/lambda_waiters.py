"""Triggers that wait on AWS Lambda, as the Amazon provider's waiter triggers do.

Each wraps one boto3 waiter; a terminal state (Failed) ends the wait at once with an
``{"status": "error", "message": ...}`` event whose message carries the state's reason.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.hooks.lambda_function import LambdaHook
from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger

from bank_pipeline.utils.compat import WaiterFailureEvent


class _LambdaWaiterTrigger(WaiterFailureEvent, AwsBaseWaiterTrigger):  # the error event on providers < 9.25 too
    def hook(self) -> LambdaHook:
        return LambdaHook(
            aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify, config=self.botocore_config
        )


class LambdaFunctionActiveTrigger(_LambdaWaiterTrigger):
    """Waits until a new function's State is Active (boto3 waiter ``function_active_v2``); Failed ends it."""

    def __init__(
        self,
        *,
        function_name: str,
        waiter_delay: int = 5,
        waiter_max_attempts: int = 60,
        aws_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            serialized_fields={"function_name": function_name},
            waiter_name="function_active_v2",
            waiter_args={"FunctionName": function_name},
            failure_message=f"Lambda function {function_name} did not become Active",
            status_message=f"State of Lambda function {function_name} is",
            status_queries=["Configuration.State", "Configuration.StateReasonCode", "Configuration.StateReason"],
            return_key="function_name",
            return_value=function_name,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            **kwargs,
        )


class LambdaFunctionUpdatedTrigger(_LambdaWaiterTrigger):
    """Waits until a function's LastUpdateStatus is Successful (boto3 waiter ``function_updated_v2``)."""

    def __init__(
        self,
        *,
        function_name: str,
        waiter_delay: int = 5,
        waiter_max_attempts: int = 60,
        aws_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            serialized_fields={"function_name": function_name},
            waiter_name="function_updated_v2",
            waiter_args={"FunctionName": function_name},
            failure_message=f"Lambda function {function_name} update failed",
            status_message=f"Update of Lambda function {function_name} is",
            status_queries=[
                "Configuration.LastUpdateStatus",
                "Configuration.LastUpdateStatusReasonCode",
                "Configuration.LastUpdateStatusReason",
            ],
            return_key="function_name",
            return_value=function_name,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            **kwargs,
        )


class LambdaPublishedVersionActiveTrigger(_LambdaWaiterTrigger):
    """Waits until a published version's State is Active (boto3 waiter ``published_version_active``).

    The event carries the version (``{"status": "success", "version": "7"}``): the task
    resumes with the event only, so what it needs next must ride in it.
    """

    def __init__(
        self,
        *,
        function_name: str,
        version: str,
        waiter_delay: int = 5,
        waiter_max_attempts: int = 60,
        aws_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            serialized_fields={"function_name": function_name, "version": version},
            waiter_name="published_version_active",
            waiter_args={"FunctionName": function_name, "Qualifier": version},
            failure_message=f"Lambda function {function_name} version {version} did not become Active",
            status_message=f"State of Lambda function {function_name} version {version} is",
            status_queries=["State", "StateReasonCode", "StateReason"],
            return_key="version",
            return_value=version,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            **kwargs,
        )
