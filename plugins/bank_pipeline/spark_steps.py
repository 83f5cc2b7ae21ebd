"""EMR pieces both EMR DAGs share: one way to stage a Spark job and run it on a cluster made for the run.

- ``cluster_params`` / ``job_flow_overrides``: the temporary cluster every EMR DAG
  asks for (tagged with its DAG and run; the Params its templates read);
- ``require_wheelhouse``: the nodes' wheelhouse the deployment staged for the run's
  instance type (``python -m bank_pipeline.wheelhouse``), or a failure naming that command;
- ``stage_job``: the job's entry point, the ``--py-files`` zip and its bootstrap
  script uploaded by content hash, so the code that ran is on record;
- ``spark_step``: the spark-submit step;
- ``transient_spark_step``: the four tasks that run a step on a temporary
  cluster (create as a setup task, add the step, wait for it, terminate as
  the teardown), which the DAG then wires with its own tasks in one ``chain``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import Param

from bank_pipeline import resources, wheelhouse
from bank_pipeline.errors import WheelhouseMissingError
from bank_pipeline.lake import split_s3_uri

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator

    from bank_pipeline.operators.emr_cluster import EmrCreateRunClusterOperator, EmrTerminateRunClusterOperator
    from bank_pipeline.sensors.emr_step import EmrStepSensorWithLogs
    from bank_pipeline.settings import Settings

INSTANCE_TYPES = ["m5.xlarge", "m5.2xlarge", "m6g.xlarge", "m6g.2xlarge", "r5.xlarge"]
DEFAULT_INSTANCE_TYPE = INSTANCE_TYPES[0]
# The Python both jobs run on, on every node: made by the bootstrap action (bank_spark/bootstrap).
PYTHON_ENV = "/opt/bank-ml/python"
PYTHON = f"{PYTHON_ENV}/bin/python"
# How long a step may run before its sensor gives up.
STEP_TIMEOUT = timedelta(hours=3)


def cluster_params(*, core_instance_count: int = 2) -> dict[str, Param]:
    """The Params ``job_flow_overrides`` templates read; a DAG using it must declare them."""
    return {
        "instance_type": Param(
            DEFAULT_INSTANCE_TYPE,
            enum=INSTANCE_TYPES,
            title="Instance type",
            description="EC2 type of the primary and core nodes.",
        ),
        "core_instance_count": Param(
            core_instance_count,
            type="integer",
            minimum=1,
            maximum=20,
            title="Core nodes",
            description="Number of core nodes.",
        ),
    }


# Instances keys of the cluster's network and the settings giving them.
NETWORK_KEYS = {
    "Ec2SubnetId": "emr_subnet_id",
    "EmrManagedMasterSecurityGroup": "emr_primary_security_group",
    "EmrManagedSlaveSecurityGroup": "emr_core_security_group",
    "ServiceAccessSecurityGroup": "emr_service_access_security_group",
}


def account_defaults(cfg: Settings) -> dict[str, Any]:
    """The lowest layer of the cluster's configuration: the roles and the network from settings. The
    ``emr_default`` connection's extra is merged over it, the DAG's overrides over both (operators.emr_cluster)."""
    network = {key: getattr(cfg, name) for key, name in NETWORK_KEYS.items() if getattr(cfg, name)}
    defaults: dict[str, Any] = {"ServiceRole": cfg.emr_service_role, "JobFlowRole": cfg.emr_job_flow_role}
    if network:
        defaults["Instances"] = network
    return defaults


def job_flow_overrides(cfg: Settings, name: str, *, bootstrap_uri: Any, wheelhouse_uri: Any) -> dict[str, Any]:
    """The overrides of a cluster ``<name>-<run id>`` made for one run and tagged with its DAG and run.

    It stays up between steps, so the DAG's teardown must terminate it; the
    idle timeout is a second guard. Its size comes from ``cluster_params()``,
    rendered as native objects (InstanceCount must reach EMR as an int).

    Every node runs the bootstrap action at ``bootstrap_uri`` with the wheelhouse at ``wheelhouse_uri``
    (the prepare task's XComArgs, resolved when the cluster is created): a Python 3.11 environment at PYTHON_ENV with the hash-locked wheels
    the deployment staged (bank_pipeline.wheelhouse), no package index needed.
    ``spark.pyspark.python`` and ``spark.pyspark.driver.python`` point driver and executors at it: EMR's stock spark-env.sh sets PYSPARK_DRIVER_PYTHON to
    the system Python, which only these properties override (an exported PYSPARK_PYTHON
    would leave the client-mode driver on the system Python without the job's libraries).
    """
    return {
        "Name": name + "-{{ run_id }}",
        "ReleaseLabel": cfg.emr_release_label,
        "Applications": [{"Name": "Spark"}],
        "LogUri": cfg.lake.emr_logs,
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
        "BootstrapActions": [
            {
                "Name": "bank-ml python",
                "ScriptBootstrapAction": {
                    "Path": bootstrap_uri,
                    "Args": [wheelhouse_uri, PYTHON_ENV],
                },
            }
        ],
        "Configurations": [
            {
                "Classification": "spark-defaults",
                "Properties": {"spark.pyspark.python": PYTHON, "spark.pyspark.driver.python": PYTHON},
            }
        ],
        "AutoTerminationPolicy": {"IdleTimeout": cfg.emr_idle_timeout_seconds},
        "VisibleToAllUsers": True,
        "Tags": [
            # The EMR service role's AmazonEMRServicePolicy_v2 (infra/bank-ml.cfn.yaml) acts only on tagged resources.
            {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"},
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


@dataclass(frozen=True)
class StagedJob:
    """Where a job's code was staged: the entry point, the --py-files zip, and the nodes' bootstrap script."""

    script_uri: str
    py_files_uri: str
    bootstrap_uri: str


def require_wheelhouse(hook: S3Hook, code_prefix: str, instance_type: str) -> str:
    """The staged wheelhouse URI for ``instance_type``'s nodes; WheelhouseMissingError naming the command if absent."""
    arch = wheelhouse.node_arch(instance_type)
    uri = wheelhouse.wheelhouse_uri(code_prefix, arch)
    bucket, prefix = split_s3_uri(uri)
    if not hook.check_for_key(prefix + resources.NODE_REQUIREMENTS, bucket_name=bucket):
        raise WheelhouseMissingError(
            f"the EMR nodes' wheelhouse for {arch} ({instance_type}) is not staged at {uri}: run "
            f"`{wheelhouse.COMMAND.format(bucket=bucket, arch=arch)}` where PyPI is reachable (`make wheelhouse`), "
            "once per deployment and after every lock change"
        )
    return uri


def _upload_once(hook: S3Hook, bucket: str, key: str, data: bytes) -> None:
    if not hook.check_for_key(key, bucket_name=bucket):
        hook.load_bytes(data, key, bucket_name=bucket)


def stage_job(hook: S3Hook, code_prefix: str, job: str) -> StagedJob:
    """Upload ``job``'s files under ``<code_prefix><job>/<hash>/``, each once per content.

    The hash covers every file shipped (entry point, zip of bank_spark + bank_serving,
    bootstrap script), so the prefix names exactly the code that ran.
    """
    files = resources.job_files(job)
    digest = hashlib.sha256()
    for name, data in sorted(files.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    bucket, prefix = split_s3_uri(code_prefix)
    base = f"{prefix}{job}/{digest.hexdigest()[:16]}/"
    for name, data in files.items():
        _upload_once(hook, bucket, base + name, data)
    uri = f"s3://{bucket}/{base}"
    return StagedJob(
        script_uri=uri + resources.entrypoint_name(job),
        py_files_uri=uri + resources.PY_FILES_NAME,
        bootstrap_uri=uri + resources.BOOTSTRAP_SCRIPT,
    )


def job_step(name: str, staged: StagedJob, args: Sequence[str]) -> dict[str, Any]:
    """The step of a staged job: ``spark-submit --py-files <zip> <entry point> args``.

    CANCEL_AND_WAIT, not TERMINATE_CLUSTER: the teardown terminates the cluster
    after the sensor has read the step's logs.
    """
    return spark_step(
        name,
        staged.script_uri,
        args,
        action_on_failure="CANCEL_AND_WAIT",
        submit_options=["--py-files", staged.py_files_uri],
    )


@dataclass(frozen=True)
class SparkStepTasks:
    """The tasks of one Spark step on a cluster made for the run; the DAG chains them."""

    create_cluster: EmrCreateRunClusterOperator
    add_step: EmrAddStepsOperator
    wait_for_step: EmrStepSensorWithLogs
    terminate_cluster: EmrTerminateRunClusterOperator


def transient_spark_step(cfg: Settings, *, name: str, cluster_name: str, prepared: Any) -> SparkStepTasks:
    """create_cluster (setup) -> run_<name> -> wait_for_<name>, and terminate_cluster (its teardown).

    Call inside a DAG. ``prepared`` is the output of the task that staged the step (a
    multiple_outputs task with ``steps``, ``bootstrap_uri`` and ``wheelhouse_uri``); the
    cluster is named ``<cluster_name>-<run id>``. The cluster is terminated whatever fails;
    its auto-termination idle timeout is a second guard. A failed step fails wait_for_<name>
    with the step's FailureDetails and the tail of its logs.
    """
    from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator

    from bank_pipeline.operators.emr_cluster import EmrCreateRunClusterOperator, EmrTerminateRunClusterOperator
    from bank_pipeline.sensors.emr_step import EmrStepSensorWithLogs

    create = EmrCreateRunClusterOperator(
        task_id="create_cluster",
        aws_conn_id=cfg.aws_conn_id,
        job_flow_overrides=job_flow_overrides(
            cfg, cluster_name, bootstrap_uri=prepared["bootstrap_uri"], wheelhouse_uri=prepared["wheelhouse_uri"]
        ),
        account_defaults=account_defaults(cfg),
    )
    # XComArgs resolve to the cluster id and the steps when the tasks run (the provider types them as values).
    cluster_id: Any = create.output
    add = EmrAddStepsOperator(
        task_id=f"run_{name}",
        aws_conn_id=cfg.aws_conn_id,
        job_flow_id=cluster_id,
        steps=cast(Any, prepared["steps"]),
        retries=0,  # a retried add would run the job twice on the same cluster
    )
    wait = EmrStepSensorWithLogs(
        task_id=f"wait_for_{name}",
        aws_conn_id=cfg.aws_conn_id,
        job_flow_id=cluster_id,
        step_id=cast(Any, add.output),  # the one step's id: the sensor takes the list AddJobFlowSteps returns
        deferrable=True,
        poke_interval=cfg.poll_seconds,
        max_attempts=int(STEP_TIMEOUT.total_seconds() // cfg.poll_seconds),
    )
    terminate = EmrTerminateRunClusterOperator(
        task_id="terminate_cluster",
        aws_conn_id=cfg.aws_conn_id,
        job_flow_id=cluster_id,
        deferrable=True,
        waiter_delay=cfg.poll_seconds,
        waiter_max_attempts=max(20, 1200 // cfg.poll_seconds),
    ).as_teardown(setups=create)
    return SparkStepTasks(create, add, wait, terminate)
