"""What moto's CloudFormation ignores of the template, and how devstack reads the bucket policy it stores.

Part of devstack's IAM (``devstack.aws.iam`` calls ``install``): an ECR repository's
``RepositoryPolicyText``, a role's ``ManagedPolicyArns``, a bucket's public access block
and versioning, ``AWS::S3::BucketPolicy`` (stored; moto's CloudFormation skipped it), and
the bucket policy's conditions evaluated with ``devstack.aws.iam.statement_applies``.
"""

from __future__ import annotations

import json
from typing import Any

from devstack.aws.iam import decide, statements_of


def install() -> None:
    """What moto's CloudFormation ignores: an ECR repository's policy, a role's managed policies."""
    from moto.ecr.models import Repository, ecr_backends
    from moto.iam.models import Role, iam_backends
    from moto.utilities.utils import get_partition

    create_repository = Repository.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    create_role = Role.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def repository(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        repo = create_repository(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        policy = cloudformation_json["Properties"].get("RepositoryPolicyText")
        if policy:
            text = policy if isinstance(policy, str) else json.dumps(policy)
            ecr_backends[account_id][region_name].set_repository_policy(account_id, repo.name, text)
        return repo

    def role(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        created = create_role(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        backend = iam_backends[account_id][get_partition(region_name)]
        for arn in cloudformation_json["Properties"].get("ManagedPolicyArns", []):
            backend.attach_role_policy(arn, created.name)
        return created

    Repository.create_from_cloudformation_json = classmethod(repository)
    Role.create_from_cloudformation_json = classmethod(role)
    _install_cloudformation_bucket()


def _install_cloudformation_bucket() -> None:
    """What moto's CloudFormation ignores of a bucket: its public access block (and its versioning)."""
    from moto.s3.models import FakeBucket, s3_backends
    from moto.utilities.utils import get_partition

    create_bucket = FakeBucket.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def bucket(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        created = create_bucket(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        backend = s3_backends[account_id][get_partition(region_name)]
        properties = cloudformation_json.get("Properties", {})
        block = properties.get("PublicAccessBlockConfiguration")
        if block:
            backend.put_public_access_block(created.name, {k: str(v).lower() for k, v in block.items()})
        versioning = (properties.get("VersioningConfiguration") or {}).get("Status")
        if versioning:
            backend.put_bucket_versioning(created.name, versioning)
        return created

    FakeBucket.create_from_cloudformation_json = classmethod(bucket)
    _install_cloudformation_bucket_policy()
    FakeBucket.get_permission = _bucket_permission


# devstack's plain-HTTP endpoint stands in for AWS's HTTPS ones: every AWS SDK call is made over TLS.
BUCKET_POLICY_CONTEXT = {"aws:securetransport": "true"}


def _bucket_permission(self: Any, action: str, resource: str) -> Any:
    """A bucket policy's answer, conditions evaluated (moto's ignores them, so the template's TLS-only
    Deny denied everything); statements for principal ``*`` only, as moto's."""
    from moto.iam.access_control import PermissionResult

    if self.policy is None:
        return PermissionResult.NEUTRAL
    public = [s for s in statements_of(json.loads(self.policy)) if s.get("Principal") in ("*", {"AWS": "*"})]
    decision, _ = decide([("bucket", {"Statement": public})], action, resource, BUCKET_POLICY_CONTEXT)
    return {"explicitDeny": PermissionResult.DENIED, "allowed": PermissionResult.PERMITTED}.get(
        decision, PermissionResult.NEUTRAL
    )


def _install_cloudformation_bucket_policy() -> None:
    """AWS::S3::BucketPolicy, which moto's CloudFormation skips: stored on the bucket (GetBucketPolicy
    answers it). devstack does not evaluate bucket policies (module docstring)."""
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    class BucketPolicy(CloudFormationModel):
        def __init__(self, bucket: str) -> None:
            self.bucket = bucket

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::S3::BucketPolicy"

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @property
        def physical_resource_id(self) -> str:
            return self.bucket

        @classmethod
        def create_from_cloudformation_json(  # type: ignore[override]
            cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
        ) -> BucketPolicy:
            properties = cloudformation_json["Properties"]
            backend = s3_backends[account_id][get_partition(region_name)]
            backend.put_bucket_policy(properties["Bucket"], json.dumps(properties["PolicyDocument"]).encode())
            return cls(properties["Bucket"])

    parsing.get_model_list.cache_clear()
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()
    assert BucketPolicy in parsing.get_model_list()
