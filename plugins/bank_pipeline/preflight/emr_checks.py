"""The EMR cluster a run asks for: its release offered, its network tagged as the service role's
policy requires, its instance types offered in the subnet's zone, its nodes' wheelhouse staged."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from bank_pipeline.preflight import Fail, Skip, Warn, iter_pages

if TYPE_CHECKING:
    from bank_pipeline.preflight.aws_checks import Account

EMR_TAG = "for-use-with-amazon-emr-managed-policies"
V2_POLICY = "AmazonEMRServicePolicy_v2"
TAG_FIX = (
    "aws ec2 create-tags --resources {ids} --tags Key="
    + EMR_TAG
    + ",Value=true (or deploy infra/bank-ml.cfn.yaml's network)"
)


def check_release_label(acct: Account) -> str:
    label = acct.cfg.emr_release_label
    offered = set(iter_pages(acct.client("emr").list_release_labels, "ReleaseLabels", "NextToken"))
    if label not in offered:
        newest = sorted(
            (x for x in offered if x.startswith("emr-7.")), key=lambda x: [int(p) for p in x[4:].split(".")]
        )[-3:]
        raise Fail(
            f"{label} is not offered in {acct.region}",
            f"set BANK_EMR_RELEASE_LABEL to one that is (newest: {', '.join(newest)})",
        )
    return f"{label} is offered in {acct.region}"


def _tagged(resource: dict[str, Any]) -> bool:
    return any(t["Key"] == EMR_TAG and t["Value"] == "true" for t in resource.get("Tags") or [])


def check_network(acct: Account) -> str:
    """The subnet and security groups the cluster gets, tagged as AmazonEMRServicePolicy_v2 requires."""
    from bank_pipeline.spark_steps import NETWORK_KEYS

    if acct.v2 is None:
        raise Skip("the EMR service role could not be read (see IAM)")
    instances = acct.cluster.get("Instances") or {}
    subnet_id = instances.get("Ec2SubnetId")
    if not subnet_id:
        if acct.v2:
            raise Fail(
                "no subnet is set: EMR would launch into the default VPC, which is not tagged for "
                f"{V2_POLICY}, and the cluster would end TERMINATED_WITH_ERRORS",
                "set BANK_EMR_SUBNET_ID and the BANK_EMR_*_SECURITY_GROUP settings to the stack's outputs",
            )
        raise Warn("no subnet is set: EMR uses the default VPC", "set BANK_EMR_SUBNET_ID")
    ec2 = acct.client("ec2")
    subnets = ec2.describe_subnets(Filters=[{"Name": "subnet-id", "Values": [subnet_id]}])["Subnets"]
    if not subnets:
        raise Fail(
            f"subnet {subnet_id} does not exist in {acct.region}", "set BANK_EMR_SUBNET_ID to the stack's EmrSubnetId"
        )
    subnet = subnets[0]
    acct.zone = subnet["AvailabilityZone"]
    group_ids = [instances[k] for k in list(NETWORK_KEYS)[1:] if instances.get(k)]
    groups = ec2.describe_security_groups(GroupIds=group_ids)["SecurityGroups"] if group_ids else []
    untagged = [r[key] for r, key in [(subnet, "SubnetId"), *((g, "GroupId") for g in groups)] if not _tagged(r)]
    if untagged and acct.v2:
        raise Fail(
            f"{', '.join(untagged)} not tagged {EMR_TAG}=true: with {V2_POLICY} on the service role "
            "the cluster would end TERMINATED_WITH_ERRORS",
            TAG_FIX.format(ids=" ".join(untagged)),
        )
    if group_ids and not instances.get("ServiceAccessSecurityGroup") and not subnet.get("MapPublicIpOnLaunch"):
        raise Fail(
            f"subnet {subnet_id} is private and the cluster's groups are set, but no ServiceAccessSecurityGroup",
            "set BANK_EMR_SERVICE_ACCESS_SECURITY_GROUP (EMR requires it in a private subnet)",
        )
    return f"subnet {subnet_id} ({subnet['AvailabilityZone']}) and {len(groups)} security groups" + (
        f" tagged for {V2_POLICY}" if acct.v2 else ""
    )


def check_instance_types(acct: Account) -> str:
    from bank_pipeline.spark_steps import DEFAULT_INSTANCE_TYPE, INSTANCE_TYPES

    zone = acct.zone
    if zone is None:
        raise Skip("no subnet to find the zone of (see the network row)")
    offerings = acct.client("ec2").describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[{"Name": "location", "Values": [zone]}, {"Name": "instance-type", "Values": list(INSTANCE_TYPES)}],
    )["InstanceTypeOfferings"]
    offered = {o["InstanceType"] for o in offerings}
    acct.instance_types = [t for t in INSTANCE_TYPES if t in offered]
    missing = [t for t in INSTANCE_TYPES if t not in offered]
    fix = "deploy the template with an AvailabilityZone that offers them (aws ec2 describe-instance-type-offerings)"
    if DEFAULT_INSTANCE_TYPE in missing:
        raise Fail(f"{zone} does not offer the default {DEFAULT_INSTANCE_TYPE} (nor {', '.join(missing)})", fix)
    if missing:
        raise Warn(f"{zone} does not offer {', '.join(missing)}: runs choosing them would fail", fix)
    return f"{zone} offers {', '.join(INSTANCE_TYPES)}"


def check_wheelhouse(acct: Account) -> str:
    """The nodes' wheels are staged for the architecture of each instance type the zone offers."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.errors import WheelhouseMissingError
    from bank_pipeline.spark_steps import DEFAULT_INSTANCE_TYPE, INSTANCE_TYPES, require_wheelhouse
    from bank_pipeline.wheelhouse import COMMAND, node_arch

    types = acct.instance_types or list(INSTANCE_TYPES)
    by_arch: dict[str, list[str]] = defaultdict(list)
    for instance_type in types:
        by_arch[node_arch(instance_type)].append(instance_type)
    hook, missing = S3Hook(aws_conn_id=acct.cfg.aws_conn_id), []
    for arch, arch_types in by_arch.items():
        try:
            require_wheelhouse(hook, acct.cfg.lake.code, arch_types[0])
        except WheelhouseMissingError:
            missing.append(arch)
    if not missing:
        return f"staged for {', '.join(by_arch)}"
    bucket = acct.cfg.lake_bucket
    detail = "; ".join(
        f"not staged for {arch} ({', '.join(by_arch[arch])}) at {acct.cfg.lake.wheelhouse(arch)}" for arch in missing
    )
    fix = " and ".join(COMMAND.format(bucket=bucket, arch=arch) for arch in missing) + (
        f", where PyPI is reachable (from a checkout, `make wheelhouse LAKE={bucket}` stages both)"
    )
    if node_arch(DEFAULT_INSTANCE_TYPE) in missing:
        raise Fail(detail, fix)
    raise Warn(detail + ": runs choosing those types would fail", fix)
