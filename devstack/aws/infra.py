"""What an account holds for the DAGs, made on devstack from the same template as on AWS.

``provision`` deploys ``infra/bank-ml.cfn.yaml`` with devstack's CloudFormation
(moto's, plus the two things devstack.aws.iam makes it honour: the repository policy
and the roles' managed policies), then makes the Airflow workers' IAM user: a user
with exactly the template's worker policy attached, and an access key. On AWS the
workers get that policy through their role instead (``AirflowRoleName``); a user
is devstack's stand-in because moto evaluates users' and assumed roles' policies
alike, and a user's key pair is what an Airflow connection holds.

Idempotent: an existing stack is reused; every call gives a fresh key of the
worker user (AWS allows two keys a user: the oldest goes first).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "bank-ml.cfn.yaml"
STACK_NAME = "bank-ml"
WORKER_USER = "bank-airflow-worker"
MAX_KEYS = 2  # IAM's limit of access keys a user

# The template's outputs and the settings (bank_pipeline.settings) they become.
SETTINGS_FROM_OUTPUTS = {
    "BANK_LAKE_BUCKET": "LakeBucketName",
    "BANK_LAMBDA_FUNCTION": "LambdaFunctionName",
    "BANK_LAMBDA_ROLE_ARN": "LambdaRoleArn",
    "BANK_EMR_SERVICE_ROLE": "EmrServiceRoleName",
    "BANK_EMR_JOB_FLOW_ROLE": "EmrJobFlowRoleName",
    "BANK_EMR_SUBNET_ID": "EmrSubnetId",
    "BANK_EMR_PRIMARY_SECURITY_GROUP": "EmrPrimarySecurityGroup",
    "BANK_EMR_CORE_SECURITY_GROUP": "EmrCoreSecurityGroup",
    "BANK_EMR_SERVICE_ACCESS_SECURITY_GROUP": "EmrServiceAccessSecurityGroup",
}


# The stack's network outputs as RunJobFlow's Instances keys (the product's bank_pipeline.spark_steps.NETWORK_KEYS
# maps the same keys to the BANK_EMR_* settings; a test keeps the two in step).
NETWORK_OUTPUTS = {
    "EmrSubnetId": "Ec2SubnetId",
    "EmrPrimarySecurityGroup": "EmrManagedMasterSecurityGroup",
    "EmrCoreSecurityGroup": "EmrManagedSlaveSecurityGroup",
    "EmrServiceAccessSecurityGroup": "ServiceAccessSecurityGroup",
}


def cluster_network(outputs: dict[str, str]) -> dict[str, str]:
    """RunJobFlow's Instances keys of the stack's network (what the BANK_EMR_* network settings give)."""
    return {key: outputs[output] for output, key in NETWORK_OUTPUTS.items()}


@dataclass(frozen=True)
class Account:
    """A deployed stack's outputs and the worker user's key pair."""

    outputs: dict[str, str]
    worker_key: tuple[str, str]
    stack_seconds: float = 0.0
    """How long creating the stack took (0 when it existed already)."""

    def settings(self) -> dict[str, str]:
        """The BANK_* variables the stack's outputs give (docs/interfaces.md; README "Pointing it at real AWS")."""
        values = {name: self.outputs[key] for name, key in SETTINGS_FROM_OUTPUTS.items()}
        values["BANK_IMAGE_REPOSITORY"] = self.outputs["ImageRepositoryUri"].rsplit("/", 1)[-1]
        return values

    def worker_env(self, aws_env: dict[str, str]) -> dict[str, str]:
        """``aws_env`` (an endpoint, a region, ...) with the worker's credentials instead of its own."""
        env = {k: v for k, v in aws_env.items() if k != "AWS_SESSION_TOKEN"}
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = self.worker_key
        return env


def worker_policy(template: Path = TEMPLATE) -> dict[str, Any]:
    """The worker policy's document as the template writes it (intrinsic functions left as they are)."""
    return load_template(template)["Resources"]["AirflowWorkerPolicy"]["Properties"]["PolicyDocument"]


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as data; short-form intrinsics (!Ref, !Sub, ...) become their long forms."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if suffix == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    Loader.add_multi_constructor("!", intrinsic)
    return yaml.load(path.read_text(), Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def deploy_stack(
    cfn: Any, *, parameters: dict[str, str] | None = None, stack_name: str = STACK_NAME, template: Path = TEMPLATE
) -> tuple[dict[str, str], float]:
    """Create the stack unless it exists; its outputs and the seconds creating it took."""
    import time

    from botocore.exceptions import ClientError

    try:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as err:
        if "does not exist" not in str(err):
            raise
        started = time.monotonic()
        cfn.create_stack(
            StackName=stack_name,
            TemplateBody=template.read_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in (parameters or {}).items()],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
        cfn.get_waiter("stack_create_complete").wait(
            StackName=stack_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        seconds = time.monotonic() - started
    else:
        seconds = 0.0
    if stack["StackStatus"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise RuntimeError(f"stack {stack_name} is {stack['StackStatus']}: {stack.get('StackStatusReason', '')}")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}, seconds


def worker_credentials(iam: Any, policy_arns: list[str], user: str = WORKER_USER) -> tuple[str, str]:
    """A new access key of ``user``, made if missing with exactly ``policy_arns`` attached."""
    try:
        iam.create_user(UserName=user)
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    attached = {p["PolicyArn"] for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]}
    for arn in attached - set(policy_arns):
        iam.detach_user_policy(UserName=user, PolicyArn=arn)
    for arn in set(policy_arns) - attached:
        iam.attach_user_policy(UserName=user, PolicyArn=arn)
    keys = sorted(iam.list_access_keys(UserName=user)["AccessKeyMetadata"], key=lambda k: k["CreateDate"])
    for old in keys[: max(0, len(keys) - MAX_KEYS + 1)]:
        iam.delete_access_key(UserName=user, AccessKeyId=old["AccessKeyId"])
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def provision(ds: Any, parameters: dict[str, str] | None = None) -> Account:
    """Deploy the template on devstack ``ds`` (a devstack.Devstack) and make the worker user; see the module doc."""
    outputs, seconds = deploy_stack(ds.client("cloudformation"), parameters=parameters)
    key = worker_credentials(ds.client("iam"), [outputs["AirflowWorkerPolicyArn"]])
    return Account(outputs=outputs, worker_key=key, stack_seconds=seconds)


def policy_without(iam: Any, policy_arn: str, sid: str, name: str) -> str:
    """A managed policy ``name``: the default version of ``policy_arn`` less statement ``sid``; its ARN."""
    policy = iam.get_policy(PolicyArn=policy_arn)["Policy"]
    document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=policy["DefaultVersionId"])["PolicyVersion"][
        "Document"
    ]
    if isinstance(document, str):
        document = json.loads(document)
    kept = [s for s in document["Statement"] if s.get("Sid") != sid]
    if len(kept) == len(document["Statement"]):
        raise ValueError(f"{policy_arn} has no statement {sid!r}")
    created = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps({**document, "Statement": kept}))
    return created["Policy"]["Arn"]
