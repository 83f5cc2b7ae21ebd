"""IAM's policy simulator on devstack: SimulatePrincipalPolicy and GetContextKeysForPrincipalPolicy.

moto has neither. Both are answered from the principal's identity policies (a user's
inline, attached and groups' policies; a role's inline and attached), evaluated with
the evaluator devstack enforces requests with (``devstack.aws.iam.decide``): an
explicit Deny wins, else an Allow allows, else the call is implicitly denied. Context
entries reach conditions as on AWS; a condition on a key the request lacks does not
hold. Simulation results carry AWS's decisions (``allowed``, ``explicitDeny``,
``implicitDeny``) and the statements that matched.

Not simulated, as devstack enforces none of them: resource-based policies, permissions
boundaries, SCPs, session policies. Answers are never truncated.

``install()`` also makes IAM calls that name a principal or an instance profile check
their ARN as resource (moto checks ``*``), so a policy may allow a principal to
simulate only itself.
"""

from __future__ import annotations

import json
from typing import Any

from devstack.aws.iam import decide, statements_of


def _default(policy: Any) -> str:
    """A managed policy's document: its default version's."""
    return next(v.document for v in policy.versions if v.version_id == policy.default_version_id)


def _policies(account_id: str, arn: str) -> list[tuple[str, dict[str, Any]]]:
    """(policy id, document) of every identity policy of the user or role ``arn``."""
    from moto.iam.models import iam_backends

    iam = iam_backends[account_id]["aws"]
    kind, _, path_name = arn.split(":", 5)[5].partition("/")
    name = path_name.rsplit("/", 1)[-1]
    found: list[tuple[str, Any]] = []
    if kind == "user":
        user = iam.get_user(name)
        found += list(user.policies.items())
        found += [(p.name, _default(p)) for p in user.managed_policies.values()]
        for group in iam.get_groups_for_user(name):
            found += list(group.policies.items())
            found += [(p.name, _default(p)) for p in group.managed_policies.values()]
    elif kind == "role":
        role = iam.get_role(name)
        found += list(role.policies.items())
        found += [(p.name, _default(p)) for p in role.managed_policies.values()]
    else:
        from moto.iam.exceptions import NotFoundException

        raise NotFoundException(f"PolicySourceArn {arn} is neither a user nor a role")
    return [(pid, json.loads(doc) if isinstance(doc, str) else doc) for pid, doc in found]


def evaluate(
    policies: list[tuple[str, dict[str, Any]]], action: str, resource: str, context: dict[str, str]
) -> dict[str, Any]:
    """One EvaluationResult of SimulatePrincipalPolicy."""
    decision, matched = decide(policies, action, resource, context)
    return {
        "EvalActionName": action,
        "EvalResourceName": resource,
        "EvalDecision": decision,
        "MatchedStatements": [{"SourcePolicyId": pid, "SourcePolicyType": "IAM Policy"} for pid in matched],
        "MissingContextValues": [],
    }


def context_keys(policies: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Every condition key the policies use, sorted, as GetContextKeysForPrincipalPolicy lists them."""
    keys = {
        key
        for _, document in policies
        for statement in statements_of(document)
        for conditions in (statement.get("Condition") or {}).values()
        for key in conditions
    }
    return sorted(keys, key=str.lower)


def install() -> None:
    """Add both actions to moto's IAM and give principal-naming IAM calls their ARN as resource."""
    from moto.core.responses import ActionResult
    from moto.iam.responses import IamResponse

    if getattr(IamResponse, "_devstack_simulate", False):
        return
    IamResponse._devstack_simulate = True  # type: ignore[attr-defined]

    def simulate_principal_policy(self: IamResponse) -> ActionResult:
        source = self._get_param("PolicySourceArn")
        policies = _policies(self.current_account, source)
        context = {
            entry["ContextKeyName"].lower(): entry["ContextKeyValues"][0]
            for entry in self._get_param("ContextEntries", [])
        }
        actions = self._get_param("ActionNames", [])
        resources = self._get_param("ResourceArns", []) or ["*"]
        results = [evaluate(policies, a, r, context) for a in actions for r in resources]
        return ActionResult({"EvaluationResults": results, "IsTruncated": False})

    def get_context_keys_for_principal_policy(self: IamResponse) -> ActionResult:
        policies = _policies(self.current_account, self._get_param("PolicySourceArn"))
        return ActionResult({"ContextKeyNames": context_keys(policies)})

    original_resource = IamResponse._determine_resource

    def determine_resource(self: IamResponse) -> str:
        source = self.data.get("PolicySourceArn")
        if source:
            return str(source[0])
        profile = self.data.get("InstanceProfileName")
        if profile:
            return f"arn:aws:iam::{self.current_account}:instance-profile/{profile[0]}"
        return original_resource(self)

    IamResponse.simulate_principal_policy = simulate_principal_policy  # type: ignore[attr-defined]
    IamResponse.get_context_keys_for_principal_policy = get_context_keys_for_principal_policy  # type: ignore[attr-defined]
    IamResponse._determine_resource = determine_resource  # type: ignore[method-assign]
