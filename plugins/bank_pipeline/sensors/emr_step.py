"""An EMR step sensor that says why a step failed.

The provider's EmrStepSensor fails with "Error while running job" in deferrable
mode and drops the step's FailureDetails; users then dig through the console.
This subclass fails with the FailureDetails, the cluster's state, and the tail
of the step's stderr and stdout from the cluster's LogUri, all in the task log.
"""

from __future__ import annotations

import gzip
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon import __version__ as amazon_version
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from packaging.version import Version

from bank_pipeline.errors import StepFailedError
from bank_pipeline.utils.compat import AMAZON_WAITER_FAILURE_EVENT_FROM

if TYPE_CHECKING:
    from airflow.sdk import Context

LOG_TAIL_LINES = 30


class EmrStepSensorWithLogs(EmrStepSensor):
    """EmrStepSensor whose failure names the reason and shows the end of the step's stderr.

    ``step_id`` may also be the add-steps task's output (an XComArg of the list of ids
    AddJobFlowSteps returns), holding the one step to watch.
    """

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        if isinstance(self.step_id, list):
            (self.step_id,) = self.step_id  # one step per add-steps task (transient_spark_step)

    def poke(self, context: Context) -> bool:
        response = self.get_emr_response(context)
        state = self.state_from_response(response)
        self.log.info("Step %s on cluster %s is %s", self.step_id, self.job_flow_id, state)
        if state in self.failed_states:
            raise StepFailedError(self.explain_failure(response))
        return state in self.target_states

    def execute(self, context: Context) -> None:
        if not self.deferrable or Version(amazon_version) >= AMAZON_WAITER_FAILURE_EVENT_FROM:
            super().execute(context)
            return
        # The provider's deferrable execute, deferring to its trigger made to yield the failure event.
        from bank_pipeline.triggers.emr_step_failure import EmrStepFailureEventTrigger

        if not self.poke(context):
            self.defer(
                timeout=timedelta(seconds=self.max_attempts * self.poke_interval),
                trigger=EmrStepFailureEventTrigger(
                    job_flow_id=self.job_flow_id,
                    step_id=self.step_id,
                    waiter_delay=int(self.poke_interval),
                    waiter_max_attempts=self.max_attempts,
                    aws_conn_id=self.aws_conn_id,
                ),
                method_name="execute_complete",
            )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        if event and event.get("status") == "success":
            self.log.info("Step %s completed", self.step_id)
            return
        # The trigger's event says only "failure"; ask EMR for the details.
        response = self.hook.conn.describe_step(ClusterId=self.job_flow_id, StepId=self.step_id)
        raise StepFailedError(self.explain_failure(response, event))

    def explain_failure(self, response: dict[str, Any], event: dict[str, Any] | None = None) -> str:
        """One message with the step's state, FailureDetails and cluster state; logs the stderr tail."""
        status = response["Step"]["Status"]
        parts = [f"EMR step {self.step_id} on cluster {self.job_flow_id} ended {status['State']}"]
        details = status.get("FailureDetails") or {}
        if details.get("Message"):
            parts.append(f"message: {details['Message']}")
        if details.get("Reason"):
            parts.append(f"reason: {details['Reason']}")
        if details.get("LogFile"):
            parts.append(f"log: {details['LogFile']}")
        if not details and event:
            parts.append(f"trigger said: {event}")
        cluster = self.hook.conn.describe_cluster(ClusterId=self.job_flow_id)["Cluster"]
        cluster_status = cluster["Status"]
        reason = cluster_status.get("StateChangeReason", {}).get("Message")
        parts.append(f"cluster is {cluster_status['State']}" + (f" ({reason})" if reason else ""))
        message = "; ".join(parts)
        # spark-submit merges the Python driver's stderr into its own stdout
        # (PythonRunner redirects it), so the job's error is in stdout.gz and
        # Spark's log4j output in stderr.gz: show the end of both.
        for name in ("stderr", "stdout"):
            tail = self._log_tail(cluster.get("LogUri"), name)
            if tail:
                self.log.error("Last lines of the step's %s:\n%s", name, tail)
                message += f"\n{name} tail:\n{tail}"
        return message

    def _log_tail(self, log_uri: str | None, name: str) -> str | None:
        """The last lines of ``<LogUri>/<cluster>/steps/<step>/<name>.gz``, if EMR has uploaded it."""
        if not log_uri:
            return None
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        bucket, _, prefix = log_uri.replace("s3n://", "s3://").removeprefix("s3://").partition("/")
        key = f"{prefix.rstrip('/')}/{self.job_flow_id}/steps/{self.step_id}/{name}.gz".lstrip("/")
        s3 = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify)
        if not s3.check_for_key(key, bucket_name=bucket):
            # EMR uploads step logs about every five minutes; a fast failure may beat it.
            self.log.warning("%s not (yet) at s3://%s/%s", name, bucket, key)
            return None
        raw = s3.get_key(key, bucket_name=bucket).get()["Body"].read()
        lines = gzip.decompress(raw).decode("utf-8", "replace").rstrip().splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])
