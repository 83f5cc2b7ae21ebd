"""The transient cluster's create and terminate operators against devstack's EMR (moto + the executor).

Each review finding is shown failing with the provider's own operator, and passing with ours.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from airflow.providers.amazon.aws.operators.emr import EmrCreateJobFlowOperator, EmrTerminateJobFlowOperator
from botocore.exceptions import ClientError

from bank_pipeline.operators.emr_cluster import (
    EmrClusterEndedTrigger,
    EmrCreateRunClusterOperator,
    EmrTerminateRunClusterOperator,
)
from devstack import Devstack
from tests.support.devstack_helpers import cluster_state, new_cluster, put_script, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class TaskInstance:
    """What the operators use of a task instance: XCom pushes (the UI's links)."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.fixture
def aws_env(ds: Devstack, emr: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ds.env().items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def emr_conn(ds: Devstack, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An account's own role names and network, in an `emr` connection's extra (as docs/deploy-aws.md advises)."""
    iam = ds.client("iam")
    suffix = uuid.uuid4().hex[:6]
    role, profile = f"acct-emr-service-{suffix}", f"acct-emr-nodes-{suffix}"
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})  # fmt: skip
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
    iam.create_role(RoleName=profile, AssumeRolePolicyDocument=trust)
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=profile)
    extra = {
        "Instances": {
            "Ec2SubnetId": "subnet-0acct",
            "EmrManagedMasterSecurityGroup": "sg-0master",
            "EmrManagedSlaveSecurityGroup": "sg-0core",
            "AdditionalMasterSecurityGroups": ["sg-0extra"],
        },
        "ServiceRole": role,
        "JobFlowRole": profile,
    }
    monkeypatch.setenv("AIRFLOW_CONN_EMR_ACCOUNT", json.dumps({"conn_type": "emr", "extra": extra}))
    return extra


def overrides(run_id: str) -> dict[str, Any]:
    """Rendered overrides as the DAGs' (emr.job_flow_overrides): Instances, tags, no roles."""
    return {
        "Name": f"bank-test-{run_id}",
        "ReleaseLabel": "emr-7.12.0",
        "Instances": {"InstanceCount": 1, "MasterInstanceType": "m5.xlarge", "KeepJobFlowAliveWhenNoSteps": True},
        "Tags": [{"Key": "airflow:dag_id", "Value": "bank_test"}, {"Key": "airflow:run_id", "Value": run_id}],
    }


def create(run_id: str, ti: TaskInstance, **kwargs: Any) -> str:
    op = EmrCreateRunClusterOperator(
        task_id="create_cluster",
        aws_conn_id=None,
        emr_conn_id="emr_account",
        job_flow_overrides=overrides(run_id),
        account_defaults={"ServiceRole": "EMR_DefaultRole", "JobFlowRole": "EMR_EC2_DefaultRole"},
        **kwargs,
    )
    return op.execute(context={"ti": ti})  # type: ignore[arg-type]


def clusters_of(emr: Any, run_id: str) -> list[str]:
    ids = []
    for summary in emr.list_clusters()["Clusters"]:
        tags = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"].get("Tags", [])
        if {"Key": "airflow:run_id", "Value": run_id} in tags:
            ids.append(summary["Id"])
    return ids


def test_the_accounts_subnet_security_groups_and_roles_reach_run_job_flow(emr_conn: dict[str, Any], emr: Any) -> None:
    run_id = f"merge-{uuid.uuid4().hex[:6]}"
    cluster = emr.describe_cluster(ClusterId=create(run_id, TaskInstance()))["Cluster"]
    attrs = cluster["Ec2InstanceAttributes"]
    assert attrs["Ec2SubnetId"] == "subnet-0acct"
    assert attrs["EmrManagedMasterSecurityGroup"] == "sg-0master"
    assert attrs["EmrManagedSlaveSecurityGroup"] == "sg-0core"
    assert attrs["AdditionalMasterSecurityGroups"] == ["sg-0extra"]
    assert attrs["IamInstanceProfile"] == emr_conn["JobFlowRole"]
    assert cluster["ServiceRole"] == emr_conn["ServiceRole"]
    assert cluster["Name"] == f"bank-test-{run_id}"  # and the DAG's own settings too
    emr.terminate_job_flows(JobFlowIds=[cluster["Id"]])


def test_the_providers_operator_drops_the_accounts_instances_settings(emr_conn: dict[str, Any], emr: Any) -> None:
    op = EmrCreateJobFlowOperator(
        task_id="create_cluster", aws_conn_id=None, emr_conn_id="emr_account",
        job_flow_overrides=overrides(f"provider-{uuid.uuid4().hex[:6]}"),
    )  # fmt: skip
    cluster_id = op.execute(context={"ti": TaskInstance()})  # type: ignore[arg-type]
    attrs = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Ec2InstanceAttributes"]
    assert "Ec2SubnetId" not in attrs or attrs["Ec2SubnetId"] != "subnet-0acct"  # the finding
    emr.terminate_job_flows(JobFlowIds=[cluster_id])


def test_a_retried_create_reuses_the_runs_cluster(
    emr_conn: dict[str, Any], emr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow.providers.amazon.aws.operators.emr as provider

    # RunJobFlow succeeds, then the task fails: EMR throttles the DescribeCluster that follows.
    throttled = ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "DescribeCluster")

    def describe_throttled(**_: Any) -> str:
        raise throttled

    run_id = f"retry-{uuid.uuid4().hex[:6]}"
    with monkeypatch.context() as patch:
        patch.setattr(provider, "get_log_uri", describe_throttled)
        with pytest.raises(ClientError, match="Rate exceeded"):
            create(run_id, TaskInstance())
    (first,) = clusters_of(emr, run_id)
    again = create(run_id, TaskInstance())  # the retry
    assert again == first and clusters_of(emr, run_id) == [first]
    emr.terminate_job_flows(JobFlowIds=[first])
    wait_until(lambda: cluster_state(emr, first), lambda s: s == "TERMINATED")
    # A run whose cluster has ended gets a new one.
    second = create(run_id, TaskInstance())
    assert second != first
    emr.terminate_job_flows(JobFlowIds=[second])


def test_overrides_without_the_run_tags_are_refused(emr_conn: dict[str, Any]) -> None:
    op = EmrCreateRunClusterOperator(
        task_id="create_cluster", aws_conn_id=None, emr_conn_id="emr_account",
        job_flow_overrides={**overrides("x"), "Tags": []},
    )  # fmt: skip
    with pytest.raises(ValueError, match="must tag the cluster with airflow:dag_id, airflow:run_id"):
        op.execute(context={"ti": TaskInstance()})  # type: ignore[arg-type]


def failed_bootstrap_cluster(emr: Any, s3: Any, bucket: str) -> str:
    bad = put_script(s3, bucket, f"boot/fails-{uuid.uuid4().hex[:6]}.sh", "exit 1\n")
    cluster_id = new_cluster(emr, BootstrapActions=[{"Name": "fails", "ScriptBootstrapAction": {"Path": bad}}])
    wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s == "TERMINATED_WITH_ERRORS")
    return cluster_id


def test_teardown_of_a_cluster_that_ended_with_errors_succeeds(
    aws_env: None, emr: Any, s3: Any, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster_id = failed_bootstrap_cluster(emr, s3, bucket)
    op = EmrTerminateRunClusterOperator(task_id="terminate_cluster", aws_conn_id=None, job_flow_id=cluster_id,
                                        deferrable=False, waiter_delay=1, waiter_max_attempts=30)  # fmt: skip
    op.execute(context={"ti": TaskInstance()})  # type: ignore[arg-type]
    # The task log (Airflow's logger writes to stdout outside a task runner) says how it ended.
    assert (
        f"Cluster {cluster_id} has already ended: TERMINATED_WITH_ERRORS (BOOTSTRAP_FAILURE" in capsys.readouterr().out
    )


def test_the_providers_teardown_fails_on_it(aws_env: None, emr: Any, s3: Any, bucket: str) -> None:
    cluster_id = failed_bootstrap_cluster(emr, s3, bucket)
    op = EmrTerminateJobFlowOperator(task_id="terminate_cluster", aws_conn_id=None, job_flow_id=cluster_id,
                                     deferrable=False, waiter_delay=1, waiter_max_attempts=5)  # fmt: skip
    op.execute(context={"ti": TaskInstance()})  # type: ignore[arg-type]  # it does not wait...
    with pytest.raises(Exception, match="TERMINATED_WITH_ERRORS|terminal failure state"):
        op.hook.get_waiter("job_flow_terminated").wait(
            ClusterId=cluster_id, WaiterConfig={"Delay": 1, "MaxAttempts": 5}
        )


def test_teardown_terminates_a_waiting_cluster_and_waits_for_its_end(aws_env: None, emr: Any) -> None:
    cluster_id = new_cluster(emr)
    wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s == "WAITING")
    op = EmrTerminateRunClusterOperator(task_id="terminate_cluster", aws_conn_id=None, job_flow_id=cluster_id,
                                        deferrable=False, waiter_delay=1, waiter_max_attempts=30)  # fmt: skip
    op.execute(context={"ti": TaskInstance()})  # type: ignore[arg-type]
    assert cluster_state(emr, cluster_id) == "TERMINATED"


def test_the_deferred_wait_accepts_an_end_with_errors(aws_env: None, emr: Any, s3: Any, bucket: str) -> None:
    cluster_id = failed_bootstrap_cluster(emr, s3, bucket)
    trigger = EmrClusterEndedTrigger(job_flow_id=cluster_id, waiter_delay=1, waiter_max_attempts=10, aws_conn_id=None)
    classpath, kwargs = trigger.serialize()
    assert classpath == "bank_pipeline.operators.emr_cluster.EmrClusterEndedTrigger"

    async def first_event() -> dict[str, Any]:
        async for event in EmrClusterEndedTrigger(**kwargs).run():  # as the triggerer rebuilds it
            return event.payload
        raise AssertionError("no event")

    assert asyncio.run(first_event()) == {"status": "success", "job_flow_id": cluster_id}
