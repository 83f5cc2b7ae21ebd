"""Every AWS call the DAGs' workers and triggerer make, with the resource it acts on and the task making it.

One table serves three readers: the preflight asks IAM whether the worker's identity
may make each call (``SimulatePrincipalPolicy``); ``tests/unit/infra/test_template.py``
checks that the template's worker policy allows each row and nothing else; the table
in docs/interfaces.md ("IAM") is ``markdown_table()``, checked by a test.

Resources are patterns: ``{lake}``, ``{repo}``, ``{function}`` are the settings
(BANK_LAKE_BUCKET, BANK_IMAGE_REPOSITORY, BANK_LAMBDA_FUNCTION), ``{region}`` and
``{account}`` the deployment's, and ``{EmrServiceRoleName}``, ``{EmrJobFlowRoleName}``,
``{LambdaRoleName}`` the roles' names (with their path, if any). A ``*`` in a resource
stands for any key or id; IAM's simulation matches it like any other character.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Call:
    """One AWS action on one resource, made by the named tasks."""

    action: str
    resource: str
    by: str
    """The tasks making it, and why (shown in the docs and in the preflight's message)."""
    context: Mapping[str, str] = field(default_factory=dict)
    """Condition keys the request carries (``iam:PassedToService`` of a PassRole)."""
    preflight: bool = False
    """Made only by the preflight (read-only), not by the DAGs."""

    def resolve(self, names: Mapping[str, str]) -> str:
        """The resource with its placeholders filled from ``names`` (a missing name raises KeyError)."""
        return string.Formatter().vformat(self.resource, (), names)


_LAKE = "arn:aws:s3:::{lake}"
_CLUSTER = "arn:aws:elasticmapreduce:{region}:{account}:cluster/*"
_REPO = "arn:aws:ecr:{region}:{account}:repository/{repo}"
_FUNCTION = "arn:aws:lambda:{region}:{account}:function:{function}"
_ALIAS = _FUNCTION + ":live"
_ROLE = "arn:aws:iam::{account}:role/"
# The clusters' tag the worker policy requires (emr.job_flow_overrides sets it to the DAG's id).
_TAGGED = {"aws:ResourceTag/airflow:dag_id": "bank_model_release"}
_CREATE_TAGGED = {"aws:RequestTag/airflow:dag_id": "bank_model_release"}


def _pass(role: str, service: str, by: str) -> Call:
    return Call("iam:PassRole", _ROLE + "{" + role + "}", by, {"iam:PassedToService": service})


CALLS: tuple[Call, ...] = (
    Call("s3:ListBucket", _LAKE, "HeadObject on a missing key answers 404 (not 403) only with it: the source check, `live.json` before the first release, model versions"),
    Call("s3:GetObject", _LAKE + "/raw/*", "prepare_step (HeadObject of the source)"),
    Call("s3:GetObject", _LAKE + "/code/*", "stage_job (is the file staged already?), the wheelhouse check"),
    Call("s3:GetObject", _LAKE + "/features/*", "validate_features, prepare_training, prepare_score (manifest, parquet footers)"),
    Call(
        "s3:GetObject",
        _LAKE + "/models/*",
        "prepare_training (live.json: the build key), read_candidate (the version is registered), push_image, "
        "prepare_score",
    ),
    Call("s3:GetObject", _LAKE + "/scores/*", "validate_scores"),
    Call(
        "s3:GetObject",
        _LAKE + "/training/*",
        "prepare_training (a build of the same inputs on record), read_candidate (the model build's candidate record)",
    ),
    Call("s3:GetObject", _LAKE + "/emr-logs/*", "wait_for_* (the failed step's stdout/stderr tail)"),
    Call("s3:PutObject", _LAKE + "/code/*", "stage_job (entry point, bank_jobs.zip, bootstrap script)"),
    Call("s3:PutObject", _LAKE + "/models/bank/live.json", "record_live (versions are registered by the model build on EMR)"),
    Call("elasticmapreduce:RunJobFlow", "*", "create_cluster (tagged airflow:dag_id=<the DAG>)", _CREATE_TAGGED),
    Call("elasticmapreduce:ListClusters", "*", "create_cluster (find this run's cluster by its tags)"),
    Call("elasticmapreduce:DescribeCluster", _CLUSTER, "create_cluster and run_* (log link), wait_for_* (failure), terminate_cluster (waiter)", _TAGGED),
    Call("elasticmapreduce:AddJobFlowSteps", _CLUSTER, "run_features, run_train, run_score", _TAGGED),
    Call("elasticmapreduce:DescribeStep", _CLUSTER, "wait_for_features, wait_for_train, wait_for_score (sensor and trigger)", _TAGGED),
    Call("elasticmapreduce:TerminateJobFlows", _CLUSTER, "terminate_cluster", _TAGGED),
    _pass("EmrServiceRoleName", "elasticmapreduce.amazonaws.com", "create_cluster (ServiceRole)"),
    _pass("EmrJobFlowRoleName", "ec2.amazonaws.com", "create_cluster (JobFlowRole)"),
    Call("ecr:GetAuthorizationToken", "*", "push_image (registry credentials, EcrHook)"),
    Call("ecr:BatchGetImage", _REPO, "push_image (the base image's manifest)"),
    Call("ecr:GetDownloadUrlForLayer", _REPO, "push_image (the base image's config)"),
    Call("ecr:BatchCheckLayerAvailability", _REPO, "push_image (is the blob there?)"),
    Call("ecr:InitiateLayerUpload", _REPO, "push_image"),
    Call("ecr:UploadLayerPart", _REPO, "push_image"),
    Call("ecr:CompleteLayerUpload", _REPO, "push_image"),
    Call("ecr:PutImage", _REPO, "push_image (the model image's manifest and tag)"),
    Call("lambda:GetFunction", _FUNCTION, "deploy_lambda (exists? the alias's image; the update waiter)"),
    Call("lambda:GetFunctionConfiguration", _FUNCTION + ":1", "deploy_lambda (the function's State and architecture; the published version's State)"),
    Call("lambda:GetAlias", _FUNCTION, "deploy_lambda"),
    Call("lambda:CreateFunction", _FUNCTION, "deploy_lambda (first release)"),
    Call("lambda:UpdateFunctionCode", _FUNCTION, "deploy_lambda"),
    Call("lambda:PublishVersion", _FUNCTION, "deploy_lambda"),
    Call("lambda:CreateAlias", _FUNCTION, "deploy_lambda (first release)"),
    Call("lambda:UpdateAlias", _FUNCTION, "deploy_lambda, and its rollback"),
    Call("lambda:DeleteAlias", _FUNCTION, "deploy_lambda's rollback of a first release"),
    Call("lambda:InvokeFunction", _ALIAS, "deploy_lambda (smoke test)"),
    Call("lambda:GetFunctionUrlConfig", _ALIAS, "lambda_url"),
    Call("lambda:CreateFunctionUrlConfig", _ALIAS, "lambda_url (first release)"),
    Call("lambda:UpdateFunctionUrlConfig", _ALIAS, "lambda_url (the auth Param changed)"),
    Call("lambda:AddPermission", _ALIAS, "lambda_url with auth NONE (the URL's public statement)", {"lambda:Principal": "*", "lambda:FunctionUrlAuthType": "NONE"}),
    Call("lambda:AddPermission", _ALIAS, "lambda_url with auth NONE (InvokeFunction through the URL)", {"lambda:Principal": "*"}),
    Call("lambda:RemovePermission", _ALIAS, "lambda_url with auth AWS_IAM (drops that statement)"),
    Call("lambda:InvokeFunctionUrl", _ALIAS, "lambda_url (the signed smoke POST)"),
    _pass("LambdaRoleName", "lambda.amazonaws.com", "deploy_lambda (first release: the execution role)"),
    Call("cloudwatch:GetMetricData", "*", "deploy_lambda's canary bake (the new version's metrics; the action takes no resource)"),
    Call("cloudwatch:DescribeAlarms", "arn:aws:cloudwatch:{region}:{account}:alarm:*", "deploy_lambda's canary bake (BANK_CANARY_ALARMS)"),
    # The preflight's own calls: read-only, each naming what it reads.
    Call("iam:SimulatePrincipalPolicy", "{principal}", "preflight (may this identity make every call above?)", preflight=True),
    Call("iam:GetContextKeysForPrincipalPolicy", "{principal}", "preflight (the condition keys its policies use)", preflight=True),
    Call("iam:GetRole", "{principal}", "preflight (its own role's path, for the simulation)", preflight=True),
    Call("iam:GetRole", _ROLE + "{EmrServiceRoleName}", "preflight (the role exists, EMR may assume it, its policies)", preflight=True),
    Call("iam:ListAttachedRolePolicies", _ROLE + "{EmrServiceRoleName}", "preflight (AmazonEMRServicePolicy_v2: the network must be tagged)", preflight=True),
    Call("iam:GetInstanceProfile", "arn:aws:iam::{account}:instance-profile/{EmrJobFlowRoleName}", "preflight (the nodes' instance profile and its role)", preflight=True),
    Call("iam:GetRole", _ROLE + "{LambdaRoleName}", "preflight (the role exists, Lambda may assume it)", preflight=True),
    Call("elasticmapreduce:ListReleaseLabels", "*", "preflight (the release label is offered in the region)", preflight=True),
    Call("ec2:DescribeSubnets", "*", "preflight (the cluster's subnet: its zone and tags)", preflight=True),
    Call("ec2:DescribeSecurityGroups", "*", "preflight (the cluster's security groups' tags)", preflight=True),
    Call("ec2:DescribeInstanceTypeOfferings", "*", "preflight (the instance types are offered in the subnet's zone)", preflight=True),
    Call("s3:GetEncryptionConfiguration", _LAKE, "preflight (the lake is encrypted)", preflight=True),
    Call("s3:GetBucketPublicAccessBlock", _LAKE, "preflight (public access is blocked)", preflight=True),
    Call("s3:GetBucketVersioning", _LAKE, "preflight (versions are kept)", preflight=True),
    Call("s3:GetBucketPolicy", _LAKE, "preflight (TLS only)", preflight=True),
    Call("ecr:DescribeRepositories", _REPO, "preflight (the repository exists, its tags are immutable)", preflight=True),
    Call("ecr:GetRepositoryPolicy", _REPO, "preflight (Lambda may pull from it)", preflight=True),
)  # fmt: skip


def dag_calls() -> tuple[Call, ...]:
    """The calls the DAGs make (what the preflight simulates)."""
    return tuple(call for call in CALLS if not call.preflight)


def markdown_table(calls: tuple[Call, ...] = CALLS) -> str:
    """The docs' table: action (with its condition keys), resource, the tasks making it."""
    lines = ["| action | resource | called by |", "| --- | --- | --- |"]
    for call in calls:
        keys = ", ".join(f"{k} {v}" for k, v in call.context.items())
        action = f"{call.action} ({keys})" if keys else call.action
        lines.append(f"| {action} | `{call.resource}` | {call.by} |")
    return "\n".join(lines) + "\n"
