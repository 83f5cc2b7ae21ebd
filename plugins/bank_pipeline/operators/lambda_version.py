"""The base of the Lambda release's operator: how it waits for a function or a version to be
ready (in the worker, a botocore waiter, or deferred to a trigger, with a Failed state or a
timeout turned into the error that names Lambda's reason: plans.lambda_release.wait_failure),
and the version's link in the UI."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator

from bank_pipeline.hooks.aws_lambda import LambdaReleaseHook
from bank_pipeline.links import LambdaFunctionVersionLink
from bank_pipeline.plans import lambda_release as plan

if TYPE_CHECKING:
    from airflow.sdk import Context


class LambdaVersionOperator(AwsBaseOperator[LambdaReleaseHook]):
    """The base of LambdaImageDeployOperator: its waiter settings, what a wait's outcome means, the version's link."""

    aws_hook_class = LambdaReleaseHook
    operator_extra_links = (LambdaFunctionVersionLink(),)
    function_name: str
    alias: str
    image_uri: str
    waiter_delay: int
    waiter_max_attempts: int
    _link_context: Context  # execute's (or a resumed method's): where _persist_link writes

    def _waiter_kwargs(self) -> dict[str, Any]:
        """A trigger's waiter settings and connection: those of this operator."""
        return {
            "waiter_delay": self.waiter_delay,
            "waiter_max_attempts": self.waiter_max_attempts,
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
            "verify": self.verify,
        }

    def _defer_timeout(self) -> timedelta:
        return timedelta(seconds=self.waiter_delay * self.waiter_max_attempts + 60)

    def _wait(self, waiter: str, args: dict[str, Any], version: str | None = None) -> None:
        """Wait in the worker; a Failed state or a timeout becomes an error naming the reason."""
        message = self.hook.wait_for(waiter, args, delay=self.waiter_delay, attempts=self.waiter_max_attempts)
        if message is not None:
            self._raise_unless_ready({"status": "error", "message": message}, version)

    def _raise_unless_ready(self, event: dict[str, Any] | None, version: str | None = None) -> None:
        if event and event.get("status") == "success":
            return
        config = self.hook.configuration(self.function_name, version)
        error = plan.wait_failure(
            event, config, function=self.function_name, alias=self.alias, image_uri=self.image_uri, version=version
        )
        if error:
            raise error

    def _persist_link(self, version: str) -> None:
        """The version's link in the UI (kept also if its smoke test then fails)."""
        LambdaFunctionVersionLink.persist(
            getattr(self, "_link_context", None) or {},
            self,
            function_name=self.function_name,
            version=version,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
        )
