"""infra/bank-ml.cfn.yaml: cfn-lint clean, least privilege, and in agreement with the settings and the docs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bank_pipeline import permissions, settings
from devstack.aws.iam import statement_applies
from devstack.aws.infra import SETTINGS_FROM_OUTPUTS, TEMPLATE, load_template
from devstack.harness.airflow_env import LAMBDA_ROLE_NAME
from tests.support.paths import REPO

pytestmark = pytest.mark.unit

# Where AWS has no resource-level permission, so "*" is the only Resource that works.
STAR_ONLY = {
    "ecr:GetAuthorizationToken", "elasticmapreduce:RunJobFlow", "elasticmapreduce:ListClusters",
    "elasticmapreduce:ListReleaseLabels", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
    "ec2:DescribeInstanceTypeOfferings", "cloudwatch:GetMetricData",
}  # fmt: skip
VALUES = {
    "AWS::Partition": "aws",
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "111122223333",
    "AWS::NoValue": None,
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resolve(node: Any, template: dict[str, Any]) -> Any:
    """The template's intrinsics (Ref, Sub, GetAtt) with parameters at their defaults, as CloudFormation would."""
    params = {k: p.get("Default", "") for k, p in template["Parameters"].items()}
    lake = f"arn:aws:s3:::{params['LakeBucketName']}"
    attrs = {
        "LakeBucket.Arn": lake,
        "ImageRepository.Arn": f"arn:aws:ecr:eu-west-1:111122223333:repository/{params['ImageRepositoryName']}",
        "EmrServiceRole.Arn": f"arn:aws:iam::111122223333:role/{params['EmrServiceRoleName']}",
        "EmrJobFlowRole.Arn": f"arn:aws:iam::111122223333:role/{params['EmrJobFlowRoleName']}",
        "LambdaExecutionRole.Arn": f"arn:aws:iam::111122223333:role/{params['LambdaRoleName']}",
        "EmrJobFlowInstanceProfile.Arn": f"arn:aws:iam::111122223333:instance-profile/{params['EmrJobFlowRoleName']}",
    }
    # The conditions the policies use, at the parameters' defaults.
    conditions = {"AttachToAirflowRole": params["AirflowRoleName"] != "", "MutableBaseTag": True}
    names = {**VALUES, **params, **attrs, "LakeBucket": params["LakeBucketName"]}

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return names[value["Ref"]]
        if set(value) == {"Fn::GetAtt"}:
            return names[".".join(value["Fn::GetAtt"])]
        if set(value) == {"Fn::If"}:
            condition, then, otherwise = value["Fn::If"]
            return walk(then if conditions[condition] else otherwise)
        if set(value) == {"Fn::Sub"}:
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(names[m.group(1)]), value["Fn::Sub"])
        return {k: walk(v) for k, v in value.items()}

    return walk(node)


def worker_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    return resolve(template["Resources"]["AirflowWorkerPolicy"]["Properties"]["PolicyDocument"], template)["Statement"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def all_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of every identity policy in the template (roles' inline policies and the managed one)."""
    found = []
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            documents.append(props["PolicyDocument"])
        for document in documents:
            found += resolve(document, template)["Statement"]
    return found


def test_cfn_lint_finds_nothing() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    done = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_action_star_and_no_write_on_every_resource(template: dict[str, Any]) -> None:
    for statement in all_statements(template):
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        actions = as_list(statement["Action"])
        assert not [a for a in actions if a == "*" or a.endswith(":*")], statement
        if "*" in as_list(statement["Resource"]):
            assert set(actions) <= STAR_ONLY, f"{statement.get('Sid')}: {set(actions) - STAR_ONLY} on Resource *"


def test_every_pass_role_names_its_role_and_service(template: dict[str, Any]) -> None:
    passes = [s for s in all_statements(template) if "iam:PassRole" in as_list(s["Action"])]
    assert len(passes) == 4  # EMR service role, EMR job-flow role (worker and service role), Lambda role
    for statement in passes:
        assert as_list(statement["Action"]) == ["iam:PassRole"]
        assert statement["Resource"].startswith("arn:aws:iam::111122223333:role/")
        assert set(statement["Condition"]["StringEquals"]) == {"iam:PassedToService"}


def test_parameter_defaults_are_the_settings_defaults(template: dict[str, Any], monkeypatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("BANK_")]:
        monkeypatch.delenv(key)
    cfg = settings.load()
    defaults = {k: p.get("Default") for k, p in template["Parameters"].items()}
    assert defaults["LakeBucketName"] == cfg.lake_bucket
    assert defaults["ImageRepositoryName"] == cfg.image_repository
    assert defaults["LambdaFunctionName"] == cfg.lambda_function
    assert defaults["LambdaRoleName"] == LAMBDA_ROLE_NAME
    # The EMR roles: settings (BANK_EMR_SERVICE_ROLE, BANK_EMR_JOB_FLOW_ROLE) where they are, else the DAG's overrides.
    if hasattr(cfg, "emr_service_role"):
        roles = {"ServiceRole": cfg.emr_service_role, "JobFlowRole": cfg.emr_job_flow_role}
    else:
        from bank_pipeline.spark_steps import job_flow_overrides

        roles = job_flow_overrides(cfg, "x")
    assert defaults["EmrServiceRoleName"] == roles["ServiceRole"]
    assert defaults["EmrJobFlowRoleName"] == roles["JobFlowRole"]
    assert set(SETTINGS_FROM_OUTPUTS.values()) <= set(template["Outputs"])


def test_repository_policy_lets_only_this_accounts_lambda_pull(template: dict[str, Any]) -> None:
    props = resolve(template["Resources"]["ImageRepository"]["Properties"], template)
    [statement] = props["RepositoryPolicyText"]["Statement"]
    assert statement["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert sorted(statement["Action"]) == ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "111122223333"}


# -- the table of calls (bank_pipeline.permissions.CALLS, also docs/interfaces.md "IAM") -------


def table_calls(template: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(action, resource, condition context) of each call, with the template's defaults for its names."""
    params = {k: p.get("Default", "") for k, p in template["Parameters"].items()}
    names = {
        "lake": params["LakeBucketName"], "repo": params["ImageRepositoryName"],
        "function": params["LambdaFunctionName"], "region": "eu-west-1", "account": "111122223333",
        "principal": f"arn:aws:iam::111122223333:user/{params['AirflowUserName']}", **params,
    }  # fmt: skip
    return [(c.action, c.resolve(names), {k.lower(): v for k, v in c.context.items()}) for c in permissions.CALLS]


def test_the_docs_table_is_the_table_in_code() -> None:
    text = (REPO / "docs" / "interfaces.md").read_text()
    section = text.split("## IAM: infra/bank-ml.cfn.yaml", 1)[1].split("\n## ", 1)[0]
    assert permissions.markdown_table() in section


def test_the_table_lists_exactly_the_policys_actions(template: dict[str, Any]) -> None:
    listed = {action for action, _, _ in table_calls(template)}
    granted = {a for s in worker_statements(template) for a in as_list(s["Action"])}
    assert listed == granted


@pytest.mark.parametrize(("action", "resource", "context"), table_calls(load_template()))
def test_the_policy_allows_each_call_in_the_table(
    template: dict[str, Any], action: str, resource: str, context: dict[str, str]
) -> None:
    allowing = [s.get("Sid") for s in worker_statements(template) if statement_applies(s, action, resource, context)]
    assert allowing, f"no statement allows {action} on {resource} {context}"


@pytest.mark.parametrize(
    ("action", "resource", "context"),
    [
        ("s3:PutObject", "arn:aws:s3:::bank-lake/raw/bank/bank-full.csv", {}),
        ("s3:PutObject", "arn:aws:s3:::bank-lake/features/x", {}),
        ("s3:DeleteObject", "arn:aws:s3:::bank-lake/models/bank/live.json", {}),
        # A registered version is the model build's: the worker writes live.json only.
        ("s3:PutObject", "arn:aws:s3:::bank-lake/models/bank/0123abcd/model.json", {}),
        # Clusters not tagged as the DAGs tag theirs, or another team's.
        ("elasticmapreduce:AddJobFlowSteps", "arn:aws:elasticmapreduce:eu-west-1:111122223333:cluster/j-1", {}),
        (
            "elasticmapreduce:TerminateJobFlows",
            "arn:aws:elasticmapreduce:eu-west-1:111122223333:cluster/j-1",
            {"aws:resourcetag/airflow:dag_id": "etl_nightly"},
        ),
        ("elasticmapreduce:RunJobFlow", "*", {}),
        ("elasticmapreduce:RunJobFlow", "*", {"aws:requesttag/airflow:dag_id": "etl_nightly"}),
        # Resource-policy statements other than the public URL's two.
        (
            "lambda:AddPermission",
            "arn:aws:lambda:eu-west-1:111122223333:function:bank-model:live",
            {"lambda:principal": "123456789012"},
        ),
        (
            "lambda:AddPermission",
            "arn:aws:lambda:eu-west-1:111122223333:function:bank-model:live",
            {"lambda:principal": "*", "lambda:functionurlauthtype": "AWS_IAM"},
        ),
        (
            "lambda:AddPermission",
            "arn:aws:lambda:eu-west-1:111122223333:function:bank-model",
            {"lambda:principal": "*"},
        ),
        ("s3:GetObject", "arn:aws:s3:::other-bucket/raw/x", {}),
        ("ecr:PutImage", "arn:aws:ecr:eu-west-1:111122223333:repository/other", {}),
        ("lambda:UpdateFunctionCode", "arn:aws:lambda:eu-west-1:111122223333:function:other", {}),
        (
            "iam:PassRole",
            "arn:aws:iam::111122223333:role/bank-model-lambda",
            {"iam:passedtoservice": "ec2.amazonaws.com"},
        ),
        (
            "iam:PassRole",
            "arn:aws:iam::111122223333:role/EMR_EC2_DefaultRole",
            {"iam:passedtoservice": "lambda.amazonaws.com"},
        ),
        ("iam:PassRole", "arn:aws:iam::111122223333:role/admin", {"iam:passedtoservice": "ec2.amazonaws.com"}),
    ],
)
def test_the_policy_refuses_what_no_task_does(
    template: dict[str, Any], action: str, resource: str, context: dict[str, str]
) -> None:
    assert not [s.get("Sid") for s in worker_statements(template) if statement_applies(s, action, resource, context)]


@pytest.mark.parametrize("doc", ["README.md", "docs/deploy-aws.md"])
def test_readme_deploys_this_template_with_named_iam(doc: str) -> None:
    """The README's brief deploy section and docs/deploy-aws.md's full walkthrough both name it."""
    text = (REPO / doc).read_text()
    section = text.split("## Pointing it at real AWS", 1)[1].split("\n## ", 1)[0]
    assert "aws cloudformation deploy" in section
    assert "--template-file infra/bank-ml.cfn.yaml" in section
    assert "CAPABILITY_NAMED_IAM" in section
    for setting in SETTINGS_FROM_OUTPUTS:
        assert setting in section, setting


# -- hardening ------------------------------------------------------------------------------


def test_the_lake_is_versioned_and_tls_only(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["LakeBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    [rule] = bucket["LifecycleConfiguration"]["Rules"]
    assert "NoncurrentVersionExpiration" in rule and "ExpirationInDays" not in rule  # current versions never expire
    policy = resolve(template["Resources"]["LakeBucketPolicy"]["Properties"], template)
    assert policy["Bucket"] == "bank-lake"
    [statement] = policy["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Deny", "*", "s3:*")
    assert statement["Resource"] == ["arn:aws:s3:::bank-lake", "arn:aws:s3:::bank-lake/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_lambda_may_pull_for_exactly_this_function(template: dict[str, Any]) -> None:
    props = resolve(template["Resources"]["ImageRepository"]["Properties"], template)
    [statement] = props["RepositoryPolicyText"]["Statement"]
    arns = statement["Condition"]["ArnLike"]["aws:SourceArn"]
    base = "arn:aws:lambda:eu-west-1:111122223333:function:bank-model"
    assert arns == [base, base + ":*"]
    assert not statement_applies(
        {**statement, "Condition": {"ArnLike": {"aws:SourceArn": arns}}},
        "ecr:BatchGetImage",
        "*",
        {"aws:sourcearn": base + "-other"},
    )


def test_the_repository_expires_untagged_and_superseded_images_but_not_the_newest(template: dict[str, Any]) -> None:
    import json

    text = template["Resources"]["ImageRepository"]["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"]["Fn::Sub"]
    params = {k: p.get("Default") for k, p in template["Parameters"].items()}
    rules = json.loads(re.sub(r"\$\{(\w+)\}", lambda m: str(params[m.group(1)]), text))["rules"]
    assert [r["rulePriority"] for r in rules] == [1, 2, 3]
    # Base images first: a rule's images are never expired by a later rule, so "any" cannot take them.
    assert rules[0]["selection"]["tagPatternList"] == ["serving-base*"]
    assert rules[1]["selection"] == {
        "tagStatus": "untagged",
        "countType": "sinceImagePushed",
        "countUnit": "days",
        "countNumber": 7,
    }
    assert rules[2]["selection"]["countType"] == "imageCountMoreThan" and rules[2]["selection"]["countNumber"] == 50


def test_the_network_outputs_reach_the_same_instances_keys_as_the_settings() -> None:
    from bank_pipeline.spark_steps import NETWORK_KEYS
    from devstack.aws.infra import NETWORK_OUTPUTS

    for output, key in NETWORK_OUTPUTS.items():
        setting = "BANK_" + NETWORK_KEYS[key].upper()
        assert SETTINGS_FROM_OUTPUTS[setting] == output
    assert set(NETWORK_OUTPUTS.values()) == set(NETWORK_KEYS)
