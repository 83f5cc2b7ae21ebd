"""A DAG run whose worker policy lacks one statement fails at the task that needs it, naming the action.

The other end-to-end tests run every DAG with exactly the template's worker
policy and pass; this one takes a statement away (LambdaRelease: every Lambda
call of deploy_lambda) and sees the release fail there, with AWS's AccessDenied
message, and nothing recorded as live.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from devstack import Devstack
from devstack.aws.infra import Account, policy_without
from devstack.harness.airflow_env import airflow_env, run_dag

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def without_lambda(ds: Devstack, account: Account, release_ready: dict[str, str]) -> dict[str, str]:
    """The session's Airflow (same DB), signing as a user whose policy lacks the LambdaRelease statement."""
    iam = ds.client("iam")
    name = f"worker-without-lambda-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    iam.attach_user_policy(
        UserName=name, PolicyArn=policy_without(iam, account.outputs["AirflowWorkerPolicyArn"], "LambdaRelease", name)
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    restricted = Account(outputs=account.outputs, worker_key=(key["AccessKeyId"], key["SecretAccessKey"]))
    return airflow_env(Path(release_ready["AIRFLOW_HOME"]), ds.env(), restricted)


def test_release_without_the_lambda_statement_fails_at_deploy_lambda_naming_the_action(
    without_lambda, full_features_run, s3, workdir
):
    assert full_features_run.state == "success", full_features_run.log[-3000:]
    live_before = s3.list_objects_v2(Bucket="bank-lake", Prefix="models/bank/live.json").get("KeyCount", 0)
    conf = {"features_manifest_uri": full_features_run.xcom["validate_features"]["manifest_uri"]}

    run = run_dag(without_lambda, "bank_model_release", conf, workdir)

    assert run.state == "failed"
    assert run.tasks["read_candidate"] == run.tasks["push_image"] == "success"
    assert run.tasks["deploy_lambda"] == "failed"
    assert run.tasks["record_live"] == "upstream_failed"
    assert "AccessDeniedException" in run.log
    assert (
        "user/worker-without-lambda-" in run.log
        and "is not authorized to perform: lambda:GetFunctionConfiguration on resource: "
        "arn:aws:lambda:us-east-1:123456789012:function:bank-model"
        in run.log
    ), run.log[-4000:]
    assert s3.list_objects_v2(Bucket="bank-lake", Prefix="models/bank/live.json").get("KeyCount", 0) == live_before
