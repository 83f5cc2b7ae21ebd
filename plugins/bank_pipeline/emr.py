"""EMR pieces shared by the DAGs, and what the Amazon provider lacks.

- The temporary cluster every EMR DAG asks for (``job_flow_overrides`` and the
  Params its templates read), and the spark-submit step (``spark_step``).
- A step sensor that says why a step failed: the provider's EmrStepSensor fails
  with "Error while running job" in deferrable mode and drops the step's
  FailureDetails; users then dig through the console. This subclass fails with
  the FailureDetails, the cluster's state, and the tail of the step's stderr and
  stdout from the cluster's LogUri, all in the task log.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.sdk import Param

from bank_pipeline.errors import StepFailedError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from bank_pipeline.settings import Settings

LOG_TAIL_LINES = 30
INSTANCE_TYPES = ["m5.xlarge", "m5.2xlarge", "m6g.xlarge", "m6g.2xlarge", "r5.xlarge"]


def run_key(run_id: str) -> str:
    """``run_id`` made safe for an S3 key and a Hadoop path (no ``:`` or ``+``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)


def cluster_params() -> dict[str, Param]:
    """The Params ``job_flow_overrides`` templates read; a DAG using it must declare them."""
    return {
        "instance_type": Param(
            "m5.xlarge",
            enum=INSTANCE_TYPES,
            title="Instance type",
            description="EC2 type of the primary and core nodes.",
        ),
        "core_instance_count": Param(
            2,
            type="integer",
            minimum=1,
            maximum=20,
            title="Core nodes",
            description="Number of core nodes.",
        ),
    }


def job_flow_overrides(
    cfg: Settings,
    name: str,
    *,
    bootstrap_actions: Sequence[Mapping[str, Any]] = (),
    configurations: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The overrides of a cluster ``<name>-<run id>`` made for one run and tagged with its DAG and run.

    It stays up between steps, so the DAG's teardown must terminate it; the
    idle timeout is a second guard. Its size comes from ``cluster_params()``,
    rendered as native objects (InstanceCount must reach EMR as an int).
    ``bootstrap_actions`` and ``configurations`` are added only when given.
    """
    extras: dict[str, Any] = {}
    if bootstrap_actions:
        extras["BootstrapActions"] = [dict(action) for action in bootstrap_actions]
    if configurations:
        extras["Configurations"] = [dict(configuration) for configuration in configurations]
    return {
        "Name": name + "-{{ run_id }}",
        "ReleaseLabel": cfg.emr_release_label,
        "Applications": [{"Name": "Spark"}],
        "LogUri": cfg.emr_log_uri,
        "Instances": {
            "InstanceGroups": [
                {
                    "Name": "primary",
                    "Market": "ON_DEMAND",
                    "InstanceRole": "MASTER",
                    "InstanceType": "{{ params.instance_type }}",
                    "InstanceCount": 1,
                },
                {
                    "Name": "core",
                    "Market": "ON_DEMAND",
                    "InstanceRole": "CORE",
                    "InstanceType": "{{ params.instance_type }}",
                    "InstanceCount": "{{ params.core_instance_count }}",
                },
            ],
            "KeepJobFlowAliveWhenNoSteps": True,
            "TerminationProtected": False,
        },
        **extras,
        "AutoTerminationPolicy": {"IdleTimeout": cfg.emr_idle_timeout_seconds},
        "JobFlowRole": "EMR_EC2_DefaultRole",
        "ServiceRole": "EMR_DefaultRole",
        "VisibleToAllUsers": True,
        "Tags": [
            {"Key": "airflow:dag_id", "Value": "{{ dag.dag_id }}"},
            {"Key": "airflow:run_id", "Value": "{{ run_id }}"},
        ],
    }


def spark_step(
    name: str,
    script_uri: str,
    args: Sequence[str],
    action_on_failure: str,
    *,
    submit_options: Sequence[str] = (),
) -> dict[str, Any]:
    """An EMR step running ``spark-submit submit_options script_uri args`` through command-runner.jar.

    Client deploy mode keeps the driver on the primary node, so the driver's
    stderr (where the job names what went wrong) is the step's stderr, which
    EMR parses into FailureDetails and uploads to the LogUri.
    ``submit_options`` (e.g. ``["--py-files", uri]``) go before the script, as
    spark-submit requires; give each as an option and its value, or ``--opt=value``
    (how devstack tells the options from the script).
    """
    return {
        "Name": name,
        "ActionOnFailure": action_on_failure,
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": ["spark-submit", "--deploy-mode", "client", *submit_options, script_uri, *args],
        },
    }


class EmrStepSensorWithLogs(EmrStepSensor):
    """EmrStepSensor whose failure names the reason and shows the end of the step's stderr."""

    def poke(self, context: Context) -> bool:
        response = self.get_emr_response(context)
        state = self.state_from_response(response)
        self.log.info("Step %s on cluster %s is %s", self.step_id, self.job_flow_id, state)
        if state in self.failed_states:
            raise StepFailedError(self.explain_failure(response))
        return state in self.target_states

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
