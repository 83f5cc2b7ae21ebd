"""The account: IAM (simulated) and EMR's roles, the lake, the image repository, Lambda; the EMR cluster's
own checks (release, network, instance types, wheelhouse) are in emr_checks."""

from __future__ import annotations

import json
from collections import defaultdict
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from bank_pipeline.preflight import Fail, Row, Skip, Warn, iter_pages, outcome
from bank_pipeline.preflight.emr_checks import (
    V2_POLICY,
    check_instance_types,
    check_network,
    check_release_label,
    check_wheelhouse,
)

if TYPE_CHECKING:
    from bank_pipeline.settings import Settings


class Account:
    """What the checks share: the worker's clients, its identity, the cluster configuration the DAGs send."""

    def __init__(self, cfg: Settings) -> None:
        from bank_pipeline import spark_steps as emr
        from bank_pipeline.operators.emr_cluster import deep_merge
        from bank_pipeline.preflight.airflow_checks import emr_extra

        self.cfg = cfg
        self._clients: dict[str, Any] = {}
        self.cluster = deep_merge(emr.account_defaults(cfg), emr_extra(without_placeholders=True))
        self.roles: dict[str, str] = {}  # the template's role parameters -> path/name found in IAM
        # Found by one check for the next ones (None: the check that finds it did not get that far).
        self.v2: bool | None = None  # AmazonEMRServicePolicy_v2 is on the service role
        self.zone: str | None = None
        self.instance_types: list[str] | None = None
        self.platform: Any = None

    @cached_property
    def _hook(self) -> Any:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=self.cfg.aws_conn_id)

    @cached_property
    def _session(self) -> Any:
        return self._hook.get_session()

    def client(self, service: str) -> Any:
        """The connection's client for ``service``: its credentials, region, endpoint and botocore config.

        All from one boto3 session, as the connection's hook builds them (AwsBaseHook.get_client_type)
        less the provider's user-agent tag, which walks the call stack for an operator the preflight
        does not have: a hook per service took 1.1 s for eight clients, one session 0.4 s.
        """
        if service not in self._clients:
            conn = self._hook.conn_config
            self._clients[service] = self._session.client(
                service,
                endpoint_url=conn.get_service_endpoint_url(service_name=service),
                config=self._hook.config,
                verify=self._hook.verify,
            )
        return self._clients[service]

    @cached_property
    def identity(self) -> dict[str, str]:
        identity: dict[str, str] = self.client("sts").get_caller_identity()
        return identity

    @property
    def region(self) -> str:
        return str(self.client("sts").meta.region_name)

    @cached_property
    def principal(self) -> str:
        """The IAM ARN of the worker's user or role (a session's role with its path, as IAM names it)."""
        arn = self.identity["Arn"]
        if ":assumed-role/" in arn:
            name = arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
            return str(self.client("iam").get_role(RoleName=name)["Role"]["Arn"])
        return arn


def _document(value: Any) -> dict[str, Any]:
    return json.loads(unquote(value)) if isinstance(value, str) else dict(value)


def trusts(role: dict[str, Any], service: str) -> bool:
    """Whether the role's trust policy lets ``service`` assume it."""
    for statement in _document(role["AssumeRolePolicyDocument"]).get("Statement", []):
        services = (statement.get("Principal") or {}).get("Service", [])
        actions = statement.get("Action", [])
        if (
            statement.get("Effect") == "Allow"
            and service in (services if isinstance(services, list) else [services])
            and "sts:AssumeRole" in (actions if isinstance(actions, list) else [actions])
        ):
            return True
    return False


ROLE_NAMES = ("EmrServiceRoleName", "EmrJobFlowRoleName", "LambdaRoleName")


def _path_name(arn: str) -> str:
    return arn.split(":role/", 1)[1]


# -- IAM ----------------------------------------------------------------------------------


def _read(what: str, setting: str, output: str, call: Any, **kwargs: Any) -> dict[str, Any]:
    """An IAM read of the role or profile ``setting`` names; Fail saying what to set when it is missing
    or is not the template's (the worker may read, and pass, only the template's roles)."""
    from botocore.exceptions import ClientError

    try:
        return dict(call(**kwargs))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchEntity":
            raise Fail(
                f"no {what}", f"deploy infra/bank-ml.cfn.yaml, or set {setting} to the stack's {output}"
            ) from None
        if code in ("AccessDenied", "AccessDeniedException"):
            raise Fail(
                f"the worker may not read {what}: it is not the template's, so the DAGs could not pass it either",
                f"set {setting} to the stack's {output}, or deploy the template naming it ({output} parameter)",
            ) from None
        raise


def check_roles(acct: Account) -> str:
    """The EMR service role and the nodes' instance profile exist with the right trust."""
    cfg, iam = acct.cfg, acct.client("iam")
    service_role = str(acct.cluster.get("ServiceRole") or "").rsplit("/", 1)[-1]
    role = _read(
        f"EMR service role {service_role!r}",
        "BANK_EMR_SERVICE_ROLE",
        "EmrServiceRoleName",
        iam.get_role,
        RoleName=service_role,
    )["Role"]
    if not trusts(role, "elasticmapreduce.amazonaws.com"):
        raise Fail(
            f"{role['Arn']} does not let elasticmapreduce.amazonaws.com assume it",
            "add EMR to its trust policy (the template's EmrServiceRole)",
        )
    acct.roles["EmrServiceRoleName"] = _path_name(role["Arn"])
    attached = [p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]]
    acct.v2 = V2_POLICY in attached
    profile_name = str(acct.cluster.get("JobFlowRole") or "").rsplit("/", 1)[-1]
    profile = _read(
        f"instance profile {profile_name!r} (JobFlowRole names an instance profile, not a role)",
        "BANK_EMR_JOB_FLOW_ROLE", "EmrJobFlowRoleName", iam.get_instance_profile, InstanceProfileName=profile_name,
    )["InstanceProfile"]  # fmt: skip
    if len(profile["Roles"]) != 1 or not trusts(profile["Roles"][0], "ec2.amazonaws.com"):
        raise Fail(
            f"instance profile {profile_name!r} must hold one role that ec2.amazonaws.com may assume",
            "aws iam add-role-to-instance-profile",
        )
    acct.roles["EmrJobFlowRoleName"] = _path_name(profile["Roles"][0]["Arn"])
    if "lambda" in cfg.release_targets and cfg.lambda_role_arn:
        name = cfg.lambda_role_arn.rsplit("/", 1)[-1]
        lam = _read(
            f"Lambda execution role {cfg.lambda_role_arn}",
            "BANK_LAMBDA_ROLE_ARN",
            "LambdaRoleArn",
            iam.get_role,
            RoleName=name,
        )["Role"]
        if not trusts(lam, "lambda.amazonaws.com"):
            raise Fail(f"{lam['Arn']} does not let lambda.amazonaws.com assume it", "add Lambda to its trust policy")
        acct.roles["LambdaRoleName"] = _path_name(lam["Arn"])
    return f"{role['RoleName']} ({', '.join(attached) or 'no managed policy'}), instance profile {profile_name}" + (
        f", Lambda role {acct.roles['LambdaRoleName']}" if "LambdaRoleName" in acct.roles else ""
    )


def check_simulation(acct: Account) -> str:
    """SimulatePrincipalPolicy: may the worker's identity make every call the DAGs make?"""
    from bank_pipeline import permissions

    cfg = acct.cfg
    partition = acct.identity["Arn"].split(":", 2)[1]
    names = {
        "lake": cfg.lake_bucket, "repo": cfg.image_repository, "function": cfg.lambda_function,
        "region": acct.region, "account": acct.identity["Account"], "principal": acct.principal,
        "EmrServiceRoleName": str(acct.cluster.get("ServiceRole") or "").rsplit("/", 1)[-1],
        "EmrJobFlowRoleName": str(acct.cluster.get("JobFlowRole") or "").rsplit("/", 1)[-1],
        "LambdaRoleName": cfg.lambda_role_arn.rsplit("/", 1)[-1], **acct.roles,
    }  # fmt: skip
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[permissions.Call]] = defaultdict(list)
    unfound = [r for r in ROLE_NAMES if r not in acct.roles]  # the roles row says why
    skipped = 0
    for call in permissions.dag_calls():
        if call.action.startswith("lambda:") and "lambda" not in cfg.release_targets:
            continue
        if any("{" + r + "}" in call.resource for r in unfound):
            skipped += 1
            continue
        resource = call.resolve(names).replace("arn:aws:", f"arn:{partition}:")
        groups[(resource, tuple(sorted(call.context.items())))].append(call)
    iam, denied, asked = acct.client("iam"), [], 0
    for (resource, context), calls in groups.items():
        entries = [{"ContextKeyName": k, "ContextKeyValues": [v], "ContextKeyType": "string"} for k, v in context]
        results = iter_pages(
            iam.simulate_principal_policy, "EvaluationResults", "Marker",
            PolicySourceArn=acct.principal, ActionNames=[c.action for c in calls], ResourceArns=[resource],
            **({"ContextEntries": entries} if entries else {}),
        )  # fmt: skip
        by_action = {c.action: c for c in calls}
        for result in results:
            asked += 1
            if result["EvalDecision"] != "allowed":
                call = by_action[result["EvalActionName"]]
                denied.append(f"{call.action} on {resource} ({result['EvalDecision']}; {call.by})")
    if denied:
        raise Fail(
            f"{acct.principal} may not make {len(denied)} of {asked} calls: " + "; ".join(denied),
            "attach the stack's AirflowWorkerPolicyArn to this identity (the template's AirflowRoleName "
            "parameter does it), or grant each call listed (docs/interfaces.md, IAM)",
        )
    keys = iam.get_context_keys_for_principal_policy(PolicySourceArn=acct.principal)["ContextKeyNames"]
    return (
        f"{acct.principal} may make all {asked} calls"
        + (f" (condition keys in its policies: {', '.join(keys)})" if keys else "")
        + (f"; {skipped} PassRole calls not asked: no role {', '.join(unfound)} was found" if skipped else "")
    )


# -- S3, ECR, Lambda ----------------------------------------------------------------------


def check_lake(acct: Account) -> str:
    from bank_pipeline.lake import split_s3_uri

    s3, bucket = acct.client("s3"), acct.cfg.lake_bucket
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError as exc:
        raise Fail(f"bucket {bucket} is not reachable: {exc}", "deploy the template or set BANK_LAKE_BUCKET") from None
    problems = []
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        algorithm = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
    except s3.exceptions.ClientError as exc:
        if "ServerSideEncryptionConfigurationNotFound" not in str(exc):
            raise
        problems.append("no default encryption")
        algorithm = "none"
    try:
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        if not all(block.values()):
            problems.append(f"public access not fully blocked ({', '.join(k for k, v in block.items() if not v)} off)")
    except s3.exceptions.ClientError as exc:
        if "NoSuchPublicAccessBlockConfiguration" not in str(exc):
            raise
        problems.append("no public access block")
    if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
        problems.append("versioning is off (an overwritten model or live.json would leave no trace)")
    if not _denies_plain_http(s3, bucket):
        problems.append("its policy does not deny requests without TLS (aws:SecureTransport false)")
    if problems:
        raise Fail(
            f"bucket {bucket}: {'; '.join(problems)}",
            "apply the template's LakeBucket and LakeBucketPolicy (public access block, encryption, versioning, TLS only)",
        )
    raw_bucket, raw_key = split_s3_uri(acct.cfg.lake.raw_input)
    try:
        s3.head_object(Bucket=raw_bucket, Key=raw_key)
    except s3.exceptions.ClientError:
        raise Warn(
            f"bucket {bucket} is encrypted ({algorithm}), private, versioned and TLS only, but {acct.cfg.lake.raw_input} is missing: bank_features_emr would fail",
            f"aws s3 cp data/bank/bank-full.csv {acct.cfg.lake.raw_input}",
        ) from None
    return f"bucket {bucket}: encrypted ({algorithm}), public access blocked, versioned, TLS only, raw input present"


def _denies_plain_http(s3: Any, bucket: str) -> bool:
    """Whether the bucket policy denies every request made without TLS."""
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except s3.exceptions.ClientError as exc:
        if "NoSuchBucketPolicy" in str(exc):
            return False
        raise
    for statement in policy.get("Statement", []):
        condition = (statement.get("Condition") or {}).get("Bool") or {}
        if statement.get("Effect") == "Deny" and str(condition.get("aws:SecureTransport")).lower() == "false":
            return True
    return False


def check_repository(acct: Account) -> str:
    cfg, ecr = acct.cfg, acct.client("ecr")
    try:
        repo = ecr.describe_repositories(repositoryNames=[cfg.image_repository])["repositories"][0]
    except ecr.exceptions.RepositoryNotFoundException:
        raise Fail(
            f"no ECR repository {cfg.image_repository} in {acct.region}",
            "deploy the template or set BANK_IMAGE_REPOSITORY",
        ) from None
    problems = []
    if repo.get("imageTagMutability", "MUTABLE") == "MUTABLE":
        problems.append("tags are MUTABLE (a model tag could be moved to another image)")
    if "lambda" in cfg.release_targets:
        try:
            policy = _document(ecr.get_repository_policy(repositoryName=cfg.image_repository)["policyText"])
        except ecr.exceptions.RepositoryPolicyNotFoundException:
            policy = {"Statement": []}
        pulls = set()
        for statement in policy.get("Statement", []):
            services = (statement.get("Principal") or {}).get("Service", [])
            if statement.get("Effect") == "Allow" and "lambda.amazonaws.com" in (
                services if isinstance(services, list) else [services]
            ):
                actions = statement.get("Action", [])
                pulls |= set(actions if isinstance(actions, list) else [actions])
        if not {"ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"} <= pulls:
            problems.append(
                "its policy does not let lambda.amazonaws.com pull (ecr:BatchGetImage, ecr:GetDownloadUrlForLayer)"
            )
    if problems:
        raise Fail(
            f"repository {cfg.image_repository}: {'; '.join(problems)}",
            "apply the template's ImageRepository (ImageTagMutability, RepositoryPolicyText)",
        )
    return f"repository {cfg.image_repository}: tags {repo.get('imageTagMutability')}, Lambda may pull"


def check_base_image(acct: Account) -> str:
    from bank_pipeline.hooks.image_registry import ImageRegistryHook
    from bank_pipeline.utils import oci, oci_image

    cfg = acct.cfg
    host, client = ImageRegistryHook(cfg.image_registry, cfg.aws_conn_id, cfg.plain_http_registries).get_conn()
    try:
        platform = oci_image.image_platform(client, cfg.image_repository, cfg.serving_base_tag)
    except oci.RegistryError as exc:
        raise Fail(
            f"the serving base image {host}/{cfg.image_repository}:{cfg.serving_base_tag} cannot be read: {exc}",
            "build and push serving/Dockerfile under that tag (docker buildx build --platform linux/amd64 --provenance=false --push)",
        ) from None
    acct.platform = platform
    return f"{host}/{cfg.image_repository}:{cfg.serving_base_tag} is {platform}"


def check_function(acct: Account) -> str:
    from bank_pipeline.plans.lambda_release import architecture_mismatch

    cfg = acct.cfg
    if "lambda" not in cfg.release_targets:
        raise Skip("BANK_RELEASE_TARGETS has no lambda")
    lam = acct.client("lambda")
    try:
        function = lam.get_function(FunctionName=cfg.lambda_function)["Configuration"]
    except lam.exceptions.ResourceNotFoundException:
        if not cfg.lambda_role_arn:
            raise Fail(
                f"function {cfg.lambda_function} does not exist and BANK_LAMBDA_ROLE_ARN is empty: the first release cannot create it",
                "set BANK_LAMBDA_ROLE_ARN to the stack's LambdaRoleArn",
            ) from None
        return f"function {cfg.lambda_function} does not exist yet: the first release creates it with {cfg.lambda_role_arn}"
    arch = (function.get("Architectures") or ["x86_64"])[0]
    platform = acct.platform
    if platform is not None:
        why = architecture_mismatch(
            f"{cfg.image_repository}:{cfg.serving_base_tag}", platform, cfg.lambda_function, arch
        )
        if why:
            raise Fail(why, "rebuild the base image for the function's architecture, or recreate the function")
    return f"function {cfg.lambda_function} exists ({arch}, {function.get('PackageType')})"


CHECKS = (
    ("IAM", "roles and trust", check_roles),
    ("IAM", "worker may make every call", check_simulation),
    ("EMR", "release label", check_release_label),
    ("EMR", "network tagged", check_network),
    ("EMR", "instance types offered", check_instance_types),
    ("EMR", "nodes' wheelhouse", check_wheelhouse),
    ("S3", "lake bucket", check_lake),
    ("ECR", "image repository", check_repository),
    ("ECR", "serving base image", check_base_image),
    ("Lambda", "function", check_function),
)


def run_checks(cfg: Settings) -> list[Row]:
    acct = Account(cfg)
    try:
        acct.identity  # noqa: B018 - nothing else can be checked without credentials
    except Exception as exc:  # noqa: BLE001
        return [
            Row(
                "AWS",
                "credentials",
                "fail",
                f"{type(exc).__name__}: {exc}",
                f"give connection {cfg.aws_conn_id!r} working credentials",
            )
        ]
    found = [Row("AWS", "credentials", "ok", f"{acct.identity['Arn']} in {acct.region}")]
    return found + [outcome(area, name, fn, acct) for area, name, fn in CHECKS]
