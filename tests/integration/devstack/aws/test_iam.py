"""IAM on devstack: enforced on every request, the template deployed as on AWS, and the worker policy's edges.

The worker policy's every statement is needed: dropping one makes the code path
that needs it fail with AWS's AccessDenied message, naming the action (the
end-to-end DAG runs, tests/e2e, are the other half: with the whole policy they pass).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from devstack import Devstack
from devstack.aws.infra import TEMPLATE, Account, load_template, policy_without

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def session(key: tuple[str, str]) -> boto3.session.Session:
    return boto3.session.Session(aws_access_key_id=key[0], aws_secret_access_key=key[1], region_name="us-east-1")


def key_without(ds: Devstack, account: Account, sid: str) -> tuple[str, str]:
    """The key of a new user holding the worker policy less statement ``sid``."""
    iam = ds.client("iam")
    name = f"worker-without-{sid}-{uuid.uuid4().hex[:6]}"
    arn = policy_without(iam, account.outputs["AirflowWorkerPolicyArn"], sid, name)
    iam.create_user(UserName=name)
    iam.attach_user_policy(UserName=name, PolicyArn=arn)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture
def as_key(ds: Devstack, monkeypatch: pytest.MonkeyPatch):
    """Point the process's AWS_* variables (what aws_conn_id=None uses) at devstack, signing with a key."""

    def use(key: tuple[str, str]) -> None:
        for name, value in {**ds.env(), "AWS_ACCESS_KEY_ID": key[0], "AWS_SECRET_ACCESS_KEY": key[1]}.items():
            monkeypatch.setenv(name, value)

    return use


def denied(err: pytest.ExceptionInfo[BaseException], action: str, resource: str = "") -> str:
    message = str(err.value)
    assert "AccessDenied" in message and f"is not authorized to perform: {action}" in message, message
    assert resource in message, message
    return message


def test_keys_devstack_does_not_know_are_refused(ds: Devstack) -> None:
    s3 = session(("testing", "testing")).client("s3", endpoint_url=ds.endpoint_url)
    with pytest.raises(ClientError) as err:
        s3.list_buckets()
    assert err.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    lam = session(("testing", "testing")).client("lambda", endpoint_url=ds.endpoint_url)
    with pytest.raises(ClientError) as err:
        lam.list_functions()
    assert "InvalidClientTokenId" in str(err.value)


def test_the_stack_holds_what_moto_cloudformation_ignores(ds: Devstack, account: Account) -> None:
    template = load_template(TEMPLATE)["Resources"]
    policy = json.loads(ds.client("ecr").get_repository_policy(repositoryName="bank-model")["policyText"])
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert statement["Sid"] == template["ImageRepository"]["Properties"]["RepositoryPolicyText"]["Statement"][0]["Sid"]
    attached = ds.client("iam").list_attached_role_policies(RoleName=account.outputs["EmrServiceRoleName"])
    assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == ["AmazonEMRServicePolicy_v2"]
    profile = ds.client("iam").get_instance_profile(InstanceProfileName=account.outputs["EmrJobFlowRoleName"])
    assert [r["Arn"] for r in profile["InstanceProfile"]["Roles"]] == [account.outputs["EmrJobFlowRoleArn"]]


def test_the_worker_writes_only_where_the_dags_write(ds: Devstack, account: Account) -> None:
    s3 = session(account.worker_key).client("s3", endpoint_url=ds.endpoint_url)
    s3.put_object(Bucket="bank-lake", Key="code/iam-test/ok", Body=b"x")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket="bank-lake", Key="raw/iam-test/nope", Body=b"x")
    denied(err, "s3:PutObject", "arn:aws:s3:::bank-lake/raw/iam-test/nope")
    with pytest.raises(ClientError) as err:
        s3.delete_object(Bucket="bank-lake", Key="code/iam-test/ok")
    denied(err, "s3:DeleteObject")


def test_the_worker_reaches_only_its_function_and_repository(ds: Devstack, account: Account) -> None:
    worker = session(account.worker_key)
    with pytest.raises(ClientError) as err:
        worker.client("lambda", endpoint_url=ds.endpoint_url).get_function(FunctionName="someone-elses")
    denied(err, "lambda:GetFunction", "function:someone-elses")
    with pytest.raises(ClientError) as err:
        worker.client("ecr", endpoint_url=ds.endpoint_url).batch_get_image(
            repositoryName="someone-elses", imageIds=[{"imageTag": "x"}]
        )
    denied(err, "ecr:BatchGetImage", "repository/someone-elses")
    with pytest.raises(ClientError) as err:
        worker.client("iam", endpoint_url=ds.endpoint_url).list_users()
    denied(err, "iam:ListUsers")
    with pytest.raises(ClientError) as err:
        worker.client("cloudformation", endpoint_url=ds.endpoint_url).describe_stacks()
    denied(err, "cloudformation:DescribeStacks")
    # As on AWS, anyone may ask who they are.
    arn = worker.client("sts", endpoint_url=ds.endpoint_url).get_caller_identity()["Arn"]
    assert arn == "arn:aws:iam::123456789012:user/bank-airflow-worker"


def test_pass_role_is_checked_with_the_service_it_is_passed_to(ds: Devstack, account: Account) -> None:
    lam = session(account.worker_key).client("lambda", endpoint_url=ds.endpoint_url)
    with pytest.raises(ClientError) as err:  # the EMR nodes' role is passable, but to EC2 only
        lam.create_function(
            FunctionName="bank-model", PackageType="Image", Role=account.outputs["EmrJobFlowRoleArn"],
            Code={"ImageUri": f"{ds.registry_url}/bank-model@sha256:{'0' * 64}"},
        )  # fmt: skip
    denied(err, "iam:PassRole", account.outputs["EmrJobFlowRoleArn"])
    emr = session(account.worker_key).client("emr", endpoint_url=ds.endpoint_url)
    with pytest.raises(ClientError) as err:
        emr.run_job_flow(
            Name="iam-test", ReleaseLabel="emr-7.12.0", ServiceRole=account.outputs["LambdaRoleArn"],
            JobFlowRole=account.outputs["EmrJobFlowRoleName"],
            Instances={"InstanceGroups": [{"InstanceRole": "MASTER", "InstanceType": "m5.xlarge", "InstanceCount": 1}]},
        )  # fmt: skip
    denied(err, "iam:PassRole", account.outputs["LambdaRoleArn"])


# -- one statement less: the code path that needs it fails naming the action ---------------


def stage_code(cfg: Any) -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline import spark_steps as emr

    return emr.stage_job(
        S3Hook(aws_conn_id=None), f"s3://{cfg.lake_bucket}/code/iam-test-{uuid.uuid4().hex[:6]}/", "bank_features"
    )


def create_cluster(cfg: Any) -> Any:
    """RunJobFlow as the DAGs make it: their overrides over the account's role names (settings)."""
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    from bank_pipeline.operators.emr_cluster import deep_merge
    from bank_pipeline.spark_steps import account_defaults, job_flow_overrides

    none = f"s3://{cfg.lake_bucket}/code/none"
    rendered = (
        # The bootstrap action's files: any S3 path will do, RunJobFlow is refused or accepted before it runs.
        json.dumps(job_flow_overrides(cfg, "iam-test", bootstrap_uri=none, wheelhouse_uri=none))
        .replace("{{ params.instance_type }}", "m5.xlarge")
        .replace('"{{ params.core_instance_count }}"', "1")
        .replace("{{ run_id }}", "iam-test")
        .replace("{{ dag.dag_id }}", "bank_iam_test")  # the worker may tag only bank_* clusters
    )
    return EmrHook(aws_conn_id=None, emr_conn_id=None).create_job_flow(
        deep_merge(account_defaults(cfg), json.loads(rendered))
    )


def create_function(cfg: Any) -> Any:
    """The first release's CreateFunction, as LambdaImageDeployOperator makes it (IAM is checked before the image)."""
    from airflow.providers.amazon.aws.hooks.lambda_function import LambdaHook

    return LambdaHook(aws_conn_id=None).conn.create_function(
        FunctionName=cfg.lambda_function, PackageType="Image", Role=cfg.lambda_role_arn,
        Code={"ImageUri": f"127.0.0.1:1/bank-model@sha256:{'0' * 64}"}, Publish=False,
    )  # fmt: skip


def read_canary_metrics(cfg: Any) -> Any:
    """A canary bake's read of the new version's metrics (CloudWatch signs as "monitoring"; IAM says cloudwatch)."""
    import datetime as dt

    from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

    from bank_pipeline.plans.lambda_canary import metric_queries

    end = dt.datetime.now(dt.UTC)
    return AwsGenericHook(aws_conn_id=None, client_type="cloudwatch").conn.get_metric_data(
        MetricDataQueries=metric_queries(cfg.lambda_function, "live", "2", 60),
        StartTime=end - dt.timedelta(minutes=5),
        EndTime=end,
    )


@pytest.mark.parametrize(
    ("sid", "call", "action"),
    [
        ("S3WriteCode", stage_code, "s3:PutObject"),
        ("CloudWatchCanaryMetrics", read_canary_metrics, "cloudwatch:GetMetricData"),
        ("EmrCreateCluster", create_cluster, "elasticmapreduce:RunJobFlow"),
        ("EmrPassJobFlowRole", create_cluster, "iam:PassRole"),
        ("LambdaPassExecutionRole", create_function, "iam:PassRole"),
    ],
)
def test_one_statement_less_fails_the_call_that_needs_it(
    ds: Devstack, account: Account, as_key, monkeypatch: pytest.MonkeyPatch, sid: str, call: Any, action: str
) -> None:
    from bank_pipeline import settings

    for name, value in account.settings().items():
        monkeypatch.setenv(name, value)
    cfg = settings.load()
    as_key(account.worker_key)
    if call is not create_function:  # with the whole policy it works (a first release needs an image: tests/e2e)
        done = call(cfg)
        if call is create_cluster:
            ds.client("emr").terminate_job_flows(JobFlowIds=[done["JobFlowId"]])
    as_key(key_without(ds, account, sid))
    with pytest.raises(ClientError) as err:
        call(cfg)
    denied(err, action)


def test_a_signature_over_the_user_agent_is_accepted_and_checked(ds: Devstack) -> None:
    # The AWS SDK for Java (Spark's S3A) signs User-Agent; botocore's signer never does.
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    class SignsUserAgent(S3SigV4Auth):
        def headers_to_sign(self, request: AWSRequest) -> Any:
            headers = super().headers_to_sign(request)
            headers["user-agent"] = request.headers["User-Agent"]
            return headers

    credentials = Credentials(*ds.admin)

    def get(agent_seen_by_server: str) -> int:
        request = AWSRequest(method="GET", url=f"{ds.endpoint_url}/", headers={"User-Agent": "aws-sdk-java/1.12.262"})
        SignsUserAgent(credentials, "s3", "us-east-1").add_auth(request)
        headers = dict(request.headers.items(), **{"User-Agent": agent_seen_by_server})
        return requests.get(request.url, headers=headers, timeout=10).status_code

    assert get("aws-sdk-java/1.12.262") == 200
    assert get("something else") == 403  # the header is part of the signature, not ignored


# -- IAM's policy simulator (devstack.aws.iam_simulate) ----------------------------------------------


def test_the_worker_may_simulate_its_own_policies_and_nobody_elses(ds: Devstack, account: Account) -> None:
    iam = session(account.worker_key).client("iam", endpoint_url=ds.endpoint_url)
    me = "arn:aws:iam::123456789012:user/bank-airflow-worker"
    lake = account.outputs["LakeBucketName"]
    results = iam.simulate_principal_policy(
        PolicySourceArn=me,
        ActionNames=["s3:PutObject"],
        ResourceArns=[f"arn:aws:s3:::{lake}/code/x", f"arn:aws:s3:::{lake}/raw/x"],
    )["EvaluationResults"]
    assert [(r["EvalResourceName"].rsplit("/", 1)[0], r["EvalDecision"]) for r in results] == [
        (f"arn:aws:s3:::{lake}/code", "allowed"),
        (f"arn:aws:s3:::{lake}/raw", "implicitDeny"),
    ]
    assert results[0]["MatchedStatements"][0]["SourcePolicyId"]
    with pytest.raises(ClientError) as err:
        iam.simulate_principal_policy(
            PolicySourceArn=account.outputs["EmrServiceRoleArn"], ActionNames=["s3:GetObject"]
        )
    denied(err, "iam:SimulatePrincipalPolicy")


def test_simulated_pass_role_needs_the_service_it_is_passed_to(ds: Devstack, account: Account) -> None:
    iam = ds.client("iam")
    me = "arn:aws:iam::123456789012:user/bank-airflow-worker"
    role = account.outputs["LambdaRoleArn"]

    def decision(service: str) -> str:
        entry = {"ContextKeyName": "iam:PassedToService", "ContextKeyValues": [service], "ContextKeyType": "string"}
        result = iam.simulate_principal_policy(
            PolicySourceArn=me, ActionNames=["iam:PassRole"], ResourceArns=[role], ContextEntries=[entry]
        )
        return result["EvaluationResults"][0]["EvalDecision"]

    assert decision("lambda.amazonaws.com") == "allowed"
    assert decision("ec2.amazonaws.com") == "implicitDeny"
    keys = iam.get_context_keys_for_principal_policy(PolicySourceArn=me)["ContextKeyNames"]
    assert "iam:PassedToService" in keys


def test_an_explicit_deny_wins_in_the_simulation(ds: Devstack, account: Account) -> None:
    iam = ds.client("iam")
    name = f"denied-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    iam.attach_user_policy(UserName=name, PolicyArn=account.outputs["AirflowWorkerPolicyArn"])
    deny = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="no-s3", PolicyDocument=json.dumps(deny))
    result = iam.simulate_principal_policy(
        PolicySourceArn=f"arn:aws:iam::123456789012:user/{name}",
        ActionNames=["s3:ListBucket"],
        ResourceArns=[f"arn:aws:s3:::{account.outputs['LakeBucketName']}"],
    )["EvaluationResults"][0]
    assert result["EvalDecision"] == "explicitDeny"
    assert [m["SourcePolicyId"] for m in result["MatchedStatements"]] == ["no-s3"]


# -- conditions on what a request carries (the worker policy's tag and URL conditions) -------------


def test_the_worker_may_use_only_clusters_tagged_as_the_dags_tag_theirs(
    ds: Devstack, account: Account, emr: Any
) -> None:
    from tests.support.devstack_helpers import new_cluster

    worker = session(account.worker_key).client("emr", endpoint_url=ds.endpoint_url)
    theirs = new_cluster(emr, Tags=[{"Key": "airflow:dag_id", "Value": "etl_nightly"}])
    ours = new_cluster(emr, Tags=[{"Key": "airflow:dag_id", "Value": "bank_features_emr"}])
    try:
        assert worker.describe_cluster(ClusterId=ours)["Cluster"]["Id"] == ours
        with pytest.raises(ClientError) as err:
            worker.terminate_job_flows(JobFlowIds=[theirs])
        denied(err, "elasticmapreduce:TerminateJobFlows", f"cluster/{theirs}")
        with pytest.raises(ClientError) as err:
            worker.describe_cluster(ClusterId=theirs)
        denied(err, "elasticmapreduce:DescribeCluster")
        with pytest.raises(ClientError) as err:  # untagged: no airflow:dag_id at all
            worker.run_job_flow(
                Name="untagged", ReleaseLabel="emr-7.12.0", ServiceRole="EMR_DefaultRole", JobFlowRole="EMR_EC2_DefaultRole",
                Instances={"InstanceCount": 1, "MasterInstanceType": "m5.xlarge"},
            )  # fmt: skip
        denied(err, "elasticmapreduce:RunJobFlow")
    finally:
        emr.terminate_job_flows(JobFlowIds=[theirs, ours])


def test_the_worker_may_add_only_the_public_urls_two_statements(ds: Devstack, account: Account) -> None:
    """IAM decides before Lambda looks the function up: a refusal is AccessDenied whether or not it exists."""
    lam = session(account.worker_key).client("lambda", endpoint_url=ds.endpoint_url)
    target = {"FunctionName": account.outputs["LambdaFunctionName"], "Qualifier": "live"}
    with pytest.raises(ClientError) as err:  # to another account: not one of the public URL's statements
        lam.add_permission(**target, StatementId="x", Action="lambda:InvokeFunction", Principal="210987654321")
    denied(err, "lambda:AddPermission")
    with pytest.raises(ClientError) as err:  # a URL statement for an auth the release never adds one for
        lam.add_permission(
            **target, StatementId="y", Action="lambda:InvokeFunctionUrl", Principal="*", FunctionUrlAuthType="AWS_IAM"
        )
    denied(err, "lambda:AddPermission")
    try:
        lam.add_permission(
            **target,
            StatementId="iam-test-url",
            Action="lambda:InvokeFunctionUrl",
            Principal="*",
            FunctionUrlAuthType="NONE",
        )
    except ClientError as exc:  # allowed by IAM; the function may not exist in this session
        assert exc.response["Error"]["Code"] == "ResourceNotFoundException", exc
    else:
        ds.client("lambda").remove_permission(**target, StatementId="iam-test-url")


def test_the_lake_keeps_what_a_worker_overwrites(ds: Devstack, account: Account) -> None:
    """Versioned: both writes stay readable. The session's lake is shared, so the versions this
    test made are deleted again (admin), leaving live.json as the release tests expect it."""
    s3 = session(account.worker_key).client("s3", endpoint_url=ds.endpoint_url)
    admin = ds.client("s3")
    lake, key = account.outputs["LakeBucketName"], "models/bank/live.json"
    made = [
        s3.put_object(Bucket=lake, Key=key, Body=body)["VersionId"]
        for body in (b'{"version": "a"}', b'{"version": "b"}')
    ]
    try:
        assert [admin.get_object(Bucket=lake, Key=key, VersionId=v)["Body"].read() for v in made] == [
            b'{"version": "a"}', b'{"version": "b"}',
        ]  # fmt: skip
    finally:
        for version in made:
            admin.delete_object(Bucket=lake, Key=key, VersionId=version)
    with pytest.raises(ClientError) as err:  # a registered version is the model build's to write
        s3.put_object(Bucket=lake, Key="models/bank/0123abcd/model.json", Body=b"{}")
    denied(err, "s3:PutObject")
