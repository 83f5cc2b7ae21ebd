"""What EMR's service role may launch into: the tagged-network rule of AmazonEMRServicePolicy_v2.

With the v2 managed policy on the service role, EMR may create instances and network
interfaces only in a subnet and security groups tagged
``for-use-with-amazon-emr-managed-policies=true`` (the policy's ``CreateInTaggedNetwork``
statement), and may create its default security groups only in a VPC so tagged
(``CreateDefaultSecurityGroupInVPCWithEMRTags``). RunJobFlow still succeeds; the cluster
then ends TERMINATED_WITH_ERRORS with a VALIDATION_ERROR, as on EMR. devstack decides this
from moto's EC2 (the subnet, its VPC, the groups and their tags) and IAM (the role's policies).

Not modelled: a service role with an inline or customer policy granting those EC2 calls
some other way (only the v2 managed policy is recognised), and instance fleets' subnet lists
beyond their first subnet.
"""

from __future__ import annotations

from typing import Any

V2_POLICY = "AmazonEMRServicePolicy_v2"
EMR_TAG = "for-use-with-amazon-emr-managed-policies"
GROUP_KEYS = ("EmrManagedMasterSecurityGroup", "EmrManagedSlaveSecurityGroup", "ServiceAccessSecurityGroup")


def _tagged(resource: Any) -> bool:
    return any(t["key"] == EMR_TAG and t["value"] == "true" for t in resource.get_tags())


def untagged_network(instances: dict[str, Any], service_role: str, account_id: str, region: str) -> str | None:
    """Why EMR would end this cluster with VALIDATION_ERROR for its network, or None if it would not.

    ``instances``: RunJobFlow's Instances keys (Ec2SubnetId and the three group keys) that were given.
    """
    from moto.ec2.models import ec2_backends
    from moto.iam.models import iam_backends

    iam = iam_backends[account_id]["aws"]
    name = service_role.rsplit("/", 1)[-1]
    role = next((r for r in iam.roles.values() if r.name == name), None)
    if role is None or not any(arn.endswith("/" + V2_POLICY) for arn in role.managed_policies):
        return None
    ec2 = ec2_backends[account_id][region]

    def value(key: str) -> str:
        return str(instances.get(key) or "")

    subnet_id = value("Ec2SubnetId")
    if subnet_id:
        subnet = next(iter(ec2.describe_subnets(subnet_ids=[subnet_id])), None)
        if subnet is None:
            return f"The subnet {subnet_id} does not exist."
    else:  # no subnet: EMR launches into the default VPC's subnet
        subnet = next((s for s in ec2.describe_subnets() if s.default_for_az), None)
        if subnet is None:
            return "No subnet was given and the region has no default VPC."
    untagged = [] if _tagged(subnet) else [subnet.id]
    groups = [value(key) for key in GROUP_KEYS if value(key)]
    for group in ec2.describe_security_groups(group_ids=groups) if groups else []:
        if not _tagged(group):
            untagged.append(group.id)
    if not value("EmrManagedMasterSecurityGroup") and not _tagged(ec2.get_vpc(subnet.vpc_id)):
        untagged.append(subnet.vpc_id)  # EMR creates its default groups in the VPC
    if not untagged:
        return None
    return (
        f"Service role {role.arn} has insufficient EC2 permissions: {', '.join(untagged)} "
        f"not tagged {EMR_TAG}=true, which {V2_POLICY} requires."
    )
