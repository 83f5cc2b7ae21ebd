"""The preflight on devstack: a ready account passes; each precondition broken alone fails its own check only.

Each case breaks one thing the way a real account could lack it (an untagged subnet, a
missing role, a statement removed from the worker policy, Airflow's placeholder
emr_default, an unstaged wheelhouse, a Kubernetes verb taken away), runs
``python -m bank_pipeline.preflight --json`` as the worker, and restores it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devstack import Devstack, kube
from devstack.aws.infra import Account, policy_without
from devstack.harness.airflow_env import airflow_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

NAMESPACE = "preflight"
WORKER = "bank-airflow-worker"
# Airflow's own default emr_default (airflow.utils.db.create_default_connections), abridged.
AIRFLOW_DEFAULT_EMR = {
    "conn_type": "emr",
    "extra": {
        "Name": "default_job_flow_name",
        "ReleaseLabel": "emr-4.6.0",
        "Instances": {"Ec2KeyName": "mykey", "Ec2SubnetId": "somesubnet", "KeepJobFlowAliveWhenNoSteps": False},
        "JobFlowRole": "EMR_EC2_DefaultRole",
        "ServiceRole": "EMR_DefaultRole",
    },
}


@pytest.fixture(scope="module")
def env(
    ds: Devstack, account: Account, release_ready: dict[str, str], kube_cluster: kube.KubeCluster, tmp_path_factory
) -> dict[str, str]:
    """The worker's Airflow environment, releasing to both targets as the release's ServiceAccount."""
    connection = kube.airflow_connection(kube_cluster.release_identity(NAMESPACE), NAMESPACE)
    return airflow_env(tmp_path_factory.mktemp("airflow_home_preflight"), ds.env(), account, connection)


def preflight(env: dict[str, str], **changes: str) -> tuple[int, dict[str, dict[str, Any]]]:
    done = subprocess.run(
        [sys.executable, "-m", "bank_pipeline.preflight", "--json"],
        env={**env, **changes}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.stdout.startswith("["), done.stderr[-3000:]
    (Path(env["AIRFLOW_HOME"]) / "preflight.json").write_text(done.stdout)  # the last run, for a person
    rows = json.loads(done.stdout)
    return done.returncode, {f"{r['area']}: {r['check']}": r for r in rows}


def failing(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {key: row["detail"] for key, row in rows.items() if row["status"] == "fail"}


def test_a_ready_account_passes_every_check(env: dict[str, str]) -> None:
    code, rows = preflight(env)
    assert failing(rows) == {} and code == 0, json.dumps(rows, indent=1)
    statuses = {key: row["status"] for key, row in rows.items()}
    # devstack stages x86_64 wheels only (its node is this machine): Graviton types are a warning.
    assert statuses.pop("EMR: nodes' wheelhouse") == "warn"
    assert set(statuses.values()) == {"ok"}, statuses
    assert "may make all" in rows["IAM: worker may make every call"]["detail"]


@contextmanager
def tag_removed(ds: Devstack, account: Account) -> Iterator[str]:
    ec2, subnet = ds.client("ec2"), account.outputs["EmrSubnetId"]
    tag = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
    ec2.delete_tags(Resources=[subnet], Tags=[tag])
    try:
        yield subnet
    finally:
        ec2.create_tags(Resources=[subnet], Tags=[tag])


@contextmanager
def statement_removed(ds: Devstack, account: Account, sid: str) -> Iterator[None]:
    iam, full = ds.client("iam"), account.outputs["AirflowWorkerPolicyArn"]
    reduced = policy_without(iam, full, sid, f"worker-without-{sid}")
    iam.attach_user_policy(UserName=WORKER, PolicyArn=reduced)
    iam.detach_user_policy(UserName=WORKER, PolicyArn=full)
    try:
        yield
    finally:
        iam.attach_user_policy(UserName=WORKER, PolicyArn=full)
        iam.detach_user_policy(UserName=WORKER, PolicyArn=reduced)
        iam.delete_policy(PolicyArn=reduced)


@contextmanager
def wheelhouse_unstaged(ds: Devstack, env: dict[str, str]) -> Iterator[str]:
    from bank_pipeline.lake import split_s3_uri
    from bank_pipeline.wheelhouse import wheelhouse_uri

    s3 = ds.client("s3")
    bucket, prefix = split_s3_uri(wheelhouse_uri(f"s3://{env['BANK_LAKE_BUCKET']}/code/", "x86_64"))
    marker = prefix + "requirements.txt"
    body = s3.get_object(Bucket=bucket, Key=marker)["Body"].read()
    s3.delete_object(Bucket=bucket, Key=marker)
    try:
        yield f"s3://{bucket}/{prefix}"
    finally:
        s3.put_object(Bucket=bucket, Key=marker, Body=body)


def test_an_untagged_subnet_fails_the_network_check_only(ds: Devstack, account: Account, env: dict[str, str]) -> None:
    with tag_removed(ds, account) as subnet:
        code, rows = preflight(env)
    assert code == 1
    assert list(failing(rows)) == ["EMR: network tagged"]
    row = rows["EMR: network tagged"]
    assert f"{subnet} not tagged for-use-with-amazon-emr-managed-policies=true" in row["detail"]
    assert f"aws ec2 create-tags --resources {subnet}" in row["fix"]


def test_a_missing_instance_profile_fails_the_roles_check_only(env: dict[str, str]) -> None:
    code, rows = preflight(env, BANK_EMR_JOB_FLOW_ROLE="NoSuchProfile")
    assert code == 1
    assert list(failing(rows)) == ["IAM: roles and trust"], failing(rows)
    # The worker may read (and pass) only the template's profile: on AWS too, another name is refused.
    row = rows["IAM: roles and trust"]
    assert row["detail"] == (
        "the worker may not read instance profile 'NoSuchProfile' (JobFlowRole names an instance profile, "
        "not a role): it is not the template's, so the DAGs could not pass it either"
    )
    assert row["fix"].startswith("set BANK_EMR_JOB_FLOW_ROLE to the stack's EmrJobFlowRoleName")
    assert rows["EMR: network tagged"]["status"] == "ok"  # judged on the service role, which was found
    assert "PassRole calls not asked: no role EmrJobFlowRoleName" in rows["IAM: worker may make every call"]["detail"]


def test_a_removed_statement_fails_the_simulation_only(ds: Devstack, account: Account, env: dict[str, str]) -> None:
    with statement_removed(ds, account, "EmrUseCluster"):
        code, rows = preflight(env)
    assert code == 1
    assert list(failing(rows)) == ["IAM: worker may make every call"], failing(rows)
    detail = rows["IAM: worker may make every call"]["detail"]
    assert "may not make 4 of" in detail
    for action, task in [("AddJobFlowSteps", "run_features"), ("TerminateJobFlows", "terminate_cluster")]:
        assert (
            f"elasticmapreduce:{action} on arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/* (implicitDeny; {task}"
            in detail
        )
    assert "AirflowWorkerPolicyArn" in rows["IAM: worker may make every call"]["fix"]


def test_airflows_placeholder_emr_connection_fails_the_connection_check_only(env: dict[str, str]) -> None:
    code, rows = preflight(env, AIRFLOW_CONN_EMR_DEFAULT=json.dumps(AIRFLOW_DEFAULT_EMR))
    assert code == 1
    assert list(failing(rows)) == ["Airflow: connection emr_default"], failing(rows)
    detail = rows["Airflow: connection emr_default"]["detail"]
    assert "Instances.Ec2KeyName='mykey'" in detail and "Instances.Ec2SubnetId='somesubnet'" in detail
    assert "airflow connections delete emr_default" in rows["Airflow: connection emr_default"]["fix"]


def test_an_unstaged_wheelhouse_fails_the_wheelhouse_check_only(ds: Devstack, env: dict[str, str]) -> None:
    with wheelhouse_unstaged(ds, env) as uri:
        code, rows = preflight(env)
    assert code == 1
    assert list(failing(rows)) == ["EMR: nodes' wheelhouse"], failing(rows)
    assert rows["EMR: nodes' wheelhouse"]["detail"].startswith(
        f"not staged for x86_64 (m5.xlarge, m5.2xlarge, r5.xlarge) at {uri}"
    )
    assert rows["EMR: nodes' wheelhouse"]["fix"].startswith(
        "python -m bank_pipeline.wheelhouse --bucket bank-lake --arch x86_64"
    )


def test_a_kubernetes_verb_taken_away_fails_the_rbac_check_only(
    kube_cluster: kube.KubeCluster, env: dict[str, str]
) -> None:
    namespace = "preflight-no-patch"
    rbac = kube.release_rbac()
    for manifest in rbac:
        if manifest["kind"] == "Role":
            for rule in manifest["rules"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != "patch"]
    connection = kube.airflow_connection(kube_cluster.release_identity(namespace, rbac), namespace)
    code, rows = preflight(env, AIRFLOW_CONN_KUBERNETES_DEFAULT=connection)
    assert code == 1
    assert list(failing(rows)) == ["Kubernetes: release RBAC"], failing(rows)
    # Every rule lost patch: the Deployment's and its canary's (the canary's other verbs are still there).
    assert (
        "may not patch deployments/bank-model (apps), patch deployments/bank-model-canary (apps) in namespace "
        f"{namespace}"
    ) in rows["Kubernetes: release RBAC"]["detail"]


def test_create_rules_are_needed_only_until_the_objects_exist(
    kube_cluster: kube.KubeCluster, env: dict[str, str]
) -> None:
    """The Role's comment lets an administrator drop the create rules once the four objects exist."""
    from bank_pipeline import resources

    namespace = "preflight-no-create"
    rbac = kube.release_rbac()
    for manifest in rbac:
        if manifest["kind"] == "Role":
            manifest["rules"] = [r for r in manifest["rules"] if r["verbs"] != ["create"]]
    connection = kube.airflow_connection(kube_cluster.release_identity(namespace, rbac), namespace)
    code, rows = preflight(env, AIRFLOW_CONN_KUBERNETES_DEFAULT=connection)
    assert code == 1 and list(failing(rows)) == ["Kubernetes: release RBAC"], failing(rows)
    assert "may not create deployments" in rows["Kubernetes: release RBAC"]["detail"]

    for manifest in resources.kubernetes_manifests():  # as the first release would, here as admin
        group = manifest["apiVersion"]
        base = "/api/v1" if group == "v1" else f"/apis/{group}"
        status, body = kube_cluster.request(
            "POST", f"{base}/namespaces/{namespace}/{manifest['kind'].lower()}s", manifest
        )
        assert status == 201, body
    code, rows = preflight(env, AIRFLOW_CONN_KUBERNETES_DEFAULT=connection)
    assert code == 0, failing(rows)
    assert "unneeded while those objects exist" in rows["Kubernetes: release RBAC"]["detail"]
    assert rows["Kubernetes: Deployment"]["detail"].startswith(f"Deployment {namespace}/bank-model exists")


def test_the_dag_shows_the_table_and_fails_on_a_failed_check(
    ds: Devstack, account: Account, env: dict[str, str], tmp_path: Path
) -> None:
    from devstack.harness.airflow_env import ensure_db, run_dag

    ensure_db(env)
    run = run_dag(env, "bank_preflight", {}, tmp_path / "ok")
    assert run.state == "success", run.log[-4000:]
    rows = {f"{r['area']}: {r['check']}": r["status"] for r in run.xcom["preflight"]}
    assert rows["IAM: worker may make every call"] == "ok" and "fail" not in rows.values()
    assert re.search(r"^IAM\s+worker may make every call\s+OK\s", run.log, re.MULTILINE)  # the table, in the task's log

    with tag_removed(ds, account) as subnet:
        broken = run_dag(env, "bank_preflight", {}, tmp_path / "broken")
    assert broken.state == "failed"
    assert broken.tasks == {"preflight": "failed"}
    assert f"1 check(s) failed: EMR network tagged: {subnet} not tagged" in broken.log


@pytest.mark.parametrize(
    ("changes", "check", "message"),
    [
        ({"BANK_EMR_RELEASE_LABEL": "emr-9.9.0"}, "EMR: release label", "emr-9.9.0 is not offered in us-east-1"),
        (
            {"BANK_SERVING_BASE_TAG": "no-such-base"},
            "ECR: serving base image",
            "bank-model:no-such-base cannot be read",
        ),
        (
            {"AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps({"conn_type": "kubernetes", "extra": {"namespace": "x"}})},
            "Airflow: connection kubernetes_default",
            "Kubernetes connection 'kubernetes_default' holds no cluster configuration "
            "(none of in_cluster, kube_config_path, kube_config in its extra)",
        ),
    ],
)
def test_a_wrong_setting_fails_its_check_only(
    env: dict[str, str], changes: dict[str, str], check: str, message: str
) -> None:
    code, rows = preflight(env, **changes)
    assert code == 1
    failed = failing(rows)
    assert list(failed) == [check], failed
    assert message in failed[check]


@contextmanager
def lake_versioning_suspended(ds: Devstack, account: Account) -> Iterator[str]:
    s3, lake = ds.client("s3"), account.outputs["LakeBucketName"]
    s3.put_bucket_versioning(Bucket=lake, VersioningConfiguration={"Status": "Suspended"})
    try:
        yield lake
    finally:
        s3.put_bucket_versioning(Bucket=lake, VersioningConfiguration={"Status": "Enabled"})


@contextmanager
def repository_tags_mutable(ds: Devstack, account: Account) -> Iterator[str]:
    ecr, repo = ds.client("ecr"), account.outputs["ImageRepositoryUri"].rsplit("/", 1)[-1]
    before = ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]
    ecr.put_image_tag_mutability(repositoryName=repo, imageTagMutability="MUTABLE")
    try:
        yield repo
    finally:
        # The exclusion filters too: without them serving-base* would stay immutable for the tests after.
        ecr.put_image_tag_mutability(
            repositoryName=repo,
            imageTagMutability=before["imageTagMutability"],
            **{k: v for k, v in before.items() if k == "imageTagMutabilityExclusionFilters"},
        )
        after = ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]
        assert after.get("imageTagMutabilityExclusionFilters") == before.get("imageTagMutabilityExclusionFilters")


def test_an_unversioned_lake_fails_the_lake_check_only(ds: Devstack, account: Account, env: dict[str, str]) -> None:
    with lake_versioning_suspended(ds, account) as lake:
        code, rows = preflight(env)
    assert code == 1 and list(failing(rows)) == ["S3: lake bucket"], failing(rows)
    assert f"bucket {lake}: versioning is off" in rows["S3: lake bucket"]["detail"]


def test_mutable_image_tags_fail_the_repository_check_only(ds: Devstack, account: Account, env: dict[str, str]) -> None:
    with repository_tags_mutable(ds, account) as repo:
        code, rows = preflight(env)
    assert code == 1 and list(failing(rows)) == ["ECR: image repository"], failing(rows)
    assert f"repository {repo}: tags are MUTABLE" in rows["ECR: image repository"]["detail"]
