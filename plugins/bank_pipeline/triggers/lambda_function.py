"""Triggers that wait on AWS Lambda, as the Amazon provider's waiter triggers do."""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.hooks.lambda_function import LambdaHook
from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger


class LambdaFunctionUpdatedTrigger(AwsBaseWaiterTrigger):
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
            status_queries=["Configuration.LastUpdateStatus", "Configuration.LastUpdateStatusReason"],
            return_key="function_name",
            return_value=function_name,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            **kwargs,
        )

    def hook(self) -> LambdaHook:
        return LambdaHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify)
