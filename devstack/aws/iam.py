"""IAM enforced in devstack: moto's own enforcement, plus what it leaves out that the DAGs' policy relies on.

moto in server mode checks every request against the caller's IAM policies once
``INITIAL_NO_AUTH_ACTION_COUNT`` requests have gone through unchecked (moto.settings
reads the variable when it is imported). devstack sets it to 0, so every request
over HTTP is checked, and creates its own admin user in-process, through moto's
IAM backend, before the server listens (``create_admin``): no request is ever
unchecked, and no count has to match a bootstrap sequence.

What moto 5.2.5 checks (moto/iam/access_control.py, moto/core/authorization.py):
the SigV4 signature; Allow and explicit Deny in the user's (or assumed role's)
inline and attached managed policies and its groups'; the Action element with
wildcards. The Resource element only for S3 (bucket and object ARNs), IAM role
actions (the role's ARN) and sts:AssumeRole; every other service is checked
against the resource ``"*"``, so a statement scoped to an ARN never matches.

What ``install()`` adds, each the smallest faithful piece:

- resource ARNs for Lambda (the function, qualified by version or alias when the
  call names one), EMR (the cluster) and ECR (the repository), so ARN-scoped
  statements match as on AWS (``*`` where AWS has no resource-level permission:
  RunJobFlow, ListClusters, GetAuthorizationToken, ListFunctions);
- IAM action names where moto's differ from the operation's: ``lambda:Invoke`` is
  ``lambda:InvokeFunction``, S3's HeadBucket is ``s3:ListBucket``, and CloudWatch's
  actions are ``cloudwatch:*``, not the signing name's ``monitoring:*``;
- ``iam:PassRole``, which moto never checks: CreateFunction and
  UpdateFunctionConfiguration pass ``Role`` to lambda.amazonaws.com; RunJobFlow
  passes ``ServiceRole`` to elasticmapreduce.amazonaws.com and the role of the
  ``JobFlowRole`` instance profile to ec2.amazonaws.com; evaluated on the role's
  ARN with the ``iam:PassedToService`` condition key (``statement_applies``:
  StringEquals/StringLike/ArnEquals/ArnLike; a key the request lacks fails);
- the signature of GET, HEAD and DELETE requests without a body (every Lambda
  GetFunction, GetAlias, DeleteAlias): moto signed the parsed parameters as if they
  were the payload and answered SignatureDoesNotMatch;
- the signature over exactly the headers the client lists in SignedHeaders, as AWS
  checks it: moto recomputes it with botocore's signer, which leaves out
  ``User-Agent`` (and ``Expect``), so every request of the AWS SDK for Java (S3A,
  EMRFS's client), which signs its User-Agent, failed with SignatureDoesNotMatch;
- AccessDenied messages in AWS's words, naming the action and the resource
  (``User: arn:... is not authorized to perform: s3:PutObject on resource:
  "arn:aws:s3:::bank-lake/code/..." because no identity-based policy allows the
  s3:PutObject action``), as JSON errors (AccessDeniedException) for JSON services;
- CloudFormation: an ECR repository's ``RepositoryPolicyText``, a role's
  ``ManagedPolicyArns`` and a bucket's ``PublicAccessBlockConfiguration`` and
  ``VersioningConfiguration``, which moto's CloudFormation ignored;
- IAM's policy simulator (SimulatePrincipalPolicy, GetContextKeysForPrincipalPolicy:
  ``devstack.aws.iam_simulate``), and the bucket reads GetBucketEncryption and
  GetPublicAccessBlock checked as s3:GetEncryptionConfiguration and
  s3:GetBucketPublicAccessBlock.

- conditions on what a request carries, evaluated as IAM does (``condition_context``):
  an EMR cluster's tags (``aws:ResourceTag/...``) and RunJobFlow's (``aws:RequestTag/...``),
  Lambda AddPermission's ``lambda:Principal`` and ``lambda:FunctionUrlAuthType``;
  operators StringEquals/StringLike/ArnEquals/ArnLike and Null.

Not covered (docs/interfaces.md lists these too): other condition keys (moto
treats a condition it cannot evaluate as met: it knows StringEquals only, and only
for values a request supplies);
resource-based policies (repository and function policies) are not evaluated,
and a bucket policy only as moto does (statements for principal ``*``), with its
conditions evaluated by ``statement_applies`` (moto ignored them) and
``aws:SecureTransport`` true: devstack's plain-HTTP endpoint stands in for AWS's
HTTPS ones, so the template's TLS-only Deny is stored but never met here;
permissions boundaries, SCPs and session policies are ignored; the
403-instead-of-404 S3 answers to a caller without s3:ListBucket are not reproduced; ``/moto-api/reset-auth`` turns enforcement off for anyone who asks:
this is a check of policies, not a security boundary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

ACCOUNT = "123456789012"  # moto's default account
ADMIN_USER = "devstack-admin"
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}

# moto's action names that are not IAM's.
ACTION_ALIASES = {"lambda:Invoke": "lambda:InvokeFunction", "s3:HeadBucket": "s3:ListBucket"}
# moto prefixes an action with the service the request was signed for; IAM's prefix differs for these.
IAM_PREFIXES = {"monitoring": "cloudwatch"}
# Services whose errors are JSON (botocore reads __type): lambda (rest-json), EMR and ECR (json).
JSON_SERVICES = {"lambda", "elasticmapreduce", "ecr"}

_LAMBDA_FUNCTION_PATH = re.compile(r"^/[^/]+/functions/(?P<name>[^/?]+)")


def create_admin(account_id: str = ACCOUNT) -> tuple[str, str]:
    """devstack's own admin user (Action "*"), made through moto's backend, not a request; its key pair.

    Call in the server process before it listens. Everything devstack does for
    itself (seeding, the EMR executor's S3 access) signs with this key.
    """
    from moto.iam.models import iam_backends

    iam = iam_backends[account_id]["aws"]
    iam.create_user(region_name="us-east-1", user_name=ADMIN_USER, path="/", tags=[])
    iam.put_user_policy(ADMIN_USER, "admin", json.dumps(ADMIN_POLICY))
    key = iam.create_access_key(ADMIN_USER)
    return key.access_key_id, key.secret_access_key


def role_credentials(role_arn: str, session_name: str, region: str = "us-east-1") -> dict[str, str]:
    """Temporary credentials of ``role_arn``, as a service that assumes it gets them (no caller check).

    What Lambda gives a handler: moto's STS mints them in-process, and requests
    signed with them are checked against the role's policies.
    """
    from moto.sts.models import sts_backends

    account = role_arn.split(":")[4] or ACCOUNT
    assumed = sts_backends[account]["aws"].assume_role(
        region_name=region,
        role_session_name=session_name[:64],
        role_arn=role_arn,
        policy="",
        duration=3600,
        external_id="",
    )
    return {
        "AWS_ACCESS_KEY_ID": assumed.access_key_id,
        "AWS_SECRET_ACCESS_KEY": assumed.secret_access_key,
        "AWS_SESSION_TOKEN": assumed.session_token,
    }


# -- resources ----------------------------------------------------------------------


def _json_body(response: Any) -> dict[str, Any]:
    try:
        body = json.loads(response.body or "{}")
    except (ValueError, TypeError):
        return {}
    return body if isinstance(body, dict) else {}


def _lambda_resource(response: Any) -> str:
    match = _LAMBDA_FUNCTION_PATH.match(response.path)
    name = unquote(match.group("name")) if match else _json_body(response).get("FunctionName")
    if not name:
        return "*"  # ListFunctions, or a body moto will refuse anyway
    qualifier = (response.querystring.get("Qualifier") or [None])[0]
    if name.startswith("arn:"):
        _, _, tail = name.partition(":function:")
        fn, _, in_arn = tail.partition(":")
        name, qualifier = fn, qualifier or in_arn or None
    elif ":" in name:  # name:qualifier
        name, _, in_name = name.partition(":")
        qualifier = qualifier or in_name
    arn = f"arn:aws:lambda:{response.region}:{response.current_account}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def _emr_resource(response: Any) -> str:
    body = _json_body(response)
    cluster = (
        body.get("ClusterId")
        or body.get("JobFlowId")
        or body.get("ResourceId")
        or (body.get("JobFlowIds") or [None])[0]
    )
    if not cluster or not str(cluster).startswith("j-"):
        return "*"  # RunJobFlow, ListClusters: no resource-level permission on AWS either
    return f"arn:aws:elasticmapreduce:{response.region}:{response.current_account}:cluster/{cluster}"


def _ecr_resource(response: Any) -> str:
    body = _json_body(response)
    names = body.get("repositoryNames") or []
    name = body.get("repositoryName") or (names[0] if len(names) == 1 else None)
    if not name:
        return "*"  # GetAuthorizationToken, DescribeRepositories without names
    registry = body.get("registryId") or response.current_account
    return f"arn:aws:ecr:{response.region}:{registry}:repository/{name}"


# -- iam:PassRole -------------------------------------------------------------------


def _role_arn(name_or_arn: str, account: str) -> str:
    return name_or_arn if name_or_arn.startswith("arn:") else f"arn:aws:iam::{account}:role/{name_or_arn}"


def _passed_roles(request: Any) -> list[tuple[str, str]]:
    """(role ARN, service) for each role the request passes to a service."""
    action = request._action
    try:
        body = json.loads(request._body or b"{}")
    except (ValueError, TypeError):
        return []
    if not isinstance(body, dict):
        return []
    account = request.account_id
    if action in ("lambda:CreateFunction", "lambda:UpdateFunctionConfiguration") and body.get("Role"):
        return [(_role_arn(body["Role"], account), "lambda.amazonaws.com")]
    if action == "elasticmapreduce:RunJobFlow":
        passed = []
        if body.get("ServiceRole"):
            passed.append((_role_arn(body["ServiceRole"], account), "elasticmapreduce.amazonaws.com"))
        if body.get("JobFlowRole"):
            passed += [(arn, "ec2.amazonaws.com") for arn in _instance_profile_roles(request, body["JobFlowRole"])]
        return passed
    return []


# -- conditions on what the request carries ------------------------------------------------

EMR_CLUSTER_ACTIONS = {
    "elasticmapreduce:DescribeCluster", "elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:DescribeStep",
    "elasticmapreduce:TerminateJobFlows", "elasticmapreduce:ListSteps", "elasticmapreduce:AddTags",
}  # fmt: skip


def condition_context(request: Any, resource: str) -> dict[str, str] | None:
    """The condition keys devstack can give a request, as IAM would (lower case), or None.

    EMR: a cluster's tags as ``aws:resourcetag/<key>``, RunJobFlow's as ``aws:requesttag/<key>``;
    Lambda AddPermission: ``lambda:principal`` and, when given, ``lambda:functionurlauthtype``.
    """
    action = request._action
    try:
        body = json.loads(request._body or b"{}")
    except (ValueError, TypeError):
        body = {}
    body = body if isinstance(body, dict) else {}
    if action == "elasticmapreduce:RunJobFlow":
        return {f"aws:requesttag/{t['Key']}".lower(): t.get("Value", "") for t in body.get("Tags") or []}
    if action in EMR_CLUSTER_ACTIONS and ":cluster/" in resource:
        from moto.emr.models import emr_backends

        cluster = emr_backends[request.account_id][request._region].clusters.get(resource.rsplit("/", 1)[-1])
        tags = cluster._tags if cluster is not None else {}
        return {f"aws:resourcetag/{k}".lower(): v for k, v in tags.items()}
    if action == "lambda:AddPermission":
        context = {"lambda:principal": str(body.get("Principal", ""))}
        if body.get("FunctionUrlAuthType"):
            context["lambda:functionurlauthtype"] = str(body["FunctionUrlAuthType"])
        return context
    return None


def statements_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A policy document's statements (one statement may stand alone, not in a list)."""
    statements = document.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def decide(
    policies: Iterable[tuple[str, dict[str, Any]]], action: str, resource: str, context: dict[str, str]
) -> tuple[str, list[str]]:
    """IAM's decision over (policy id, document) pairs: ``explicitDeny`` if a Deny applies, else
    ``allowed`` if an Allow does, else ``implicitDeny``; and the ids of the policies that decided."""
    allowed: list[str] = []
    denied: list[str] = []
    for policy_id, document in policies:
        for statement in statements_of(document):
            if statement_applies(statement, action, resource, context):
                (denied if statement.get("Effect") == "Deny" else allowed).append(policy_id)
    if denied:
        return "explicitDeny", denied
    return ("allowed", allowed) if allowed else ("implicitDeny", [])


def _check_conditions(request: Any, action: str, resource: str, context: dict[str, str]) -> None:
    """``action`` on ``resource`` evaluated with ``context`` as IAM does (``decide``); moto's own check
    treats every condition as met."""
    from moto.iam.access_control import IAMPolicy

    policies = (("", IAMPolicy(p)._policy_json) for p in request._access_key.collect_policies())
    if decide(policies, action, resource, context)[0] != "allowed":
        _deny(request, action, resource)


def _instance_profile_roles(request: Any, profile: str) -> list[str]:
    """The roles of instance profile ``profile`` (a name or ARN); the same-named role if it does not exist."""
    from moto.iam.exceptions import NotFoundException

    name = profile.rsplit("/", 1)[-1]
    try:
        found = request.backend.get_instance_profile(name)
    except NotFoundException:
        return [_role_arn(name, request.account_id)]
    return [role.arn for role in found.roles] or [_role_arn(name, request.account_id)]


def _check_pass_role(request: Any, role_arn: str, service: str) -> None:
    """iam:PassRole on ``role_arn`` with iam:PassedToService=``service``, evaluated as IAM does.

    Not with moto's evaluator: it treats an Allow statement whose condition does not
    hold as an explicit Deny, so one PassRole statement for another service would deny them all.
    """
    _check_conditions(request, "iam:PassRole", role_arn, {"iam:passedtoservice": service})


def _matches(patterns: Any, value: str, case_sensitive: bool = True) -> bool:
    """IAM's wildcard match (``*`` and ``?``) of ``value`` against one pattern or a list of them."""
    flags = 0 if case_sensitive else re.IGNORECASE
    for pattern in patterns if isinstance(patterns, list) else [patterns]:
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in str(pattern))
        if re.fullmatch(regex, value, flags):
            return True
    return False


CONDITION_OPERATORS = {
    "Bool": lambda expected, actual: (
        str(actual).lower() in [str(e).lower() for e in (expected if isinstance(expected, list) else [expected])]
    ),
    "StringEquals": lambda expected, actual: actual in (expected if isinstance(expected, list) else [expected]),
    "StringLike": lambda expected, actual: _matches(expected, actual),
    "ArnEquals": lambda expected, actual: actual in (expected if isinstance(expected, list) else [expected]),
    "ArnLike": lambda expected, actual: _matches(expected, actual),
}


def statement_applies(statement: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    """Whether ``statement`` speaks of ``action`` on ``resource`` and its conditions hold for ``context``.

    Context keys are lower case (IAM's keys are case-insensitive). A condition on a
    key the context lacks does not hold, as on AWS; an operator outside
    CONDITION_OPERATORS raises, so nothing is waved through unread.
    """
    if "Action" in statement and not _matches(statement["Action"], action, case_sensitive=False):
        return False
    if "NotAction" in statement and _matches(statement["NotAction"], action, case_sensitive=False):
        return False
    if "Resource" in statement and not _matches(statement["Resource"], resource):
        return False
    if "NotResource" in statement and _matches(statement["NotResource"], resource):
        return False
    for operator, conditions in (statement.get("Condition") or {}).items():
        if operator == "Null":  # "true": the key is absent; "false": it is present
            if any((context.get(k.lower()) is None) != (str(v).lower() == "true") for k, v in conditions.items()):
                return False
            continue
        if operator not in CONDITION_OPERATORS:
            raise ValueError(f"devstack evaluates no {operator} condition (statement {statement.get('Sid')})")
        for key, expected in conditions.items():
            actual = context.get(key.lower())
            if actual is None or not CONDITION_OPERATORS[operator](expected, actual):
                return False
    return True


# -- errors -------------------------------------------------------------------------


def denied_message(principal_arn: str, action: str, resource: str) -> str:
    """AWS's wording of an implicit deny."""
    on = f" on resource: {resource}" if resource and resource != "*" else ""
    return (
        f"User: {principal_arn} is not authorized to perform: {action}{on} "
        f"because no identity-based policy allows the {action} action"
    )


def _deny(request: Any, action: str, resource: str) -> None:
    from moto.core.exceptions import AccessDeniedError, JsonRESTError
    from moto.s3.exceptions import S3ClientError

    principal = request._access_key.arn
    message = denied_message(principal, action, resource)
    if request._service == "s3":
        raise S3ClientError("AccessDenied", message)
    if request._service in JSON_SERVICES:
        error = JsonRESTError("AccessDeniedException", message)
        error.code = 403
        raise error
    # The query-protocol (XML) services' error; its message is "User: <arn> is not authorized to perform: <action>".
    raise AccessDeniedError(principal, message.split("perform: ", 1)[1])


# -- install ------------------------------------------------------------------------


def install() -> None:
    """Patch moto (in this process) as the module's docstring says. Idempotent."""
    from moto.awslambda.responses import LambdaResponse
    from moto.ecr.responses import ECRResponse
    from moto.emr.responses import ElasticMapReduceResponse
    from moto.iam import access_control

    if getattr(access_control, "_devstack_iam", False):
        return
    access_control._devstack_iam = True

    LambdaResponse._determine_resource = _lambda_resource
    ElasticMapReduceResponse._determine_resource = _emr_resource
    ECRResponse._determine_resource = _ecr_resource

    base = access_control.IAMRequestBase
    original_init = base.__init__
    original_check = base.check_action_permitted
    original_aws_request = base._create_aws_request

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        service, _, name = self._action.partition(":")
        self._action = ACTION_ALIASES.get(self._action, f"{IAM_PREFIXES.get(service, service)}:{name}")

    def check_action_permitted(self: Any, resource: str) -> None:
        self._devstack_resource = resource
        original_check(self, resource)
        for role_arn, service in _passed_roles(self):
            _check_pass_role(self, role_arn, service)
        context = condition_context(self, resource)
        if context is not None:
            _check_conditions(self, self._action, resource, context)

    def _raise_access_denied(self: Any) -> None:
        _deny(self, self._action, getattr(self, "_devstack_resource", "*"))

    def _create_aws_request(self: Any) -> Any:
        if self._body or self._service == "s3" or self._method not in ("GET", "HEAD", "DELETE"):
            return original_aws_request(self)
        # No payload: sign the empty body the client signed, not the parsed parameters.
        data, self._data = self._data, b""
        try:
            return original_aws_request(self)
        finally:
            self._data = data

    for cls in (access_control.IAMRequest, access_control.S3IAMRequest):
        cls._create_auth = _signing_what_the_client_signed(cls._create_auth)

    base.__init__ = __init__
    base.check_action_permitted = check_action_permitted
    base._create_aws_request = _create_aws_request
    access_control.IAMRequest._raise_access_denied = _raise_access_denied
    access_control.S3IAMRequest._raise_access_denied = _raise_access_denied
    from devstack.aws import iam_cloudformation

    iam_cloudformation.install()
    _install_s3_action_names()
    from devstack.aws import iam_simulate

    iam_simulate.install()


def _install_s3_action_names() -> None:
    """IAM's names of the bucket reads the preflight makes; moto checks them as s3:ListBucket or not at all."""
    from moto.s3.responses import ACTION_MAP

    ACTION_MAP["BUCKET"]["GET"]["encryption"] = "GetEncryptionConfiguration"
    ACTION_MAP["BUCKET"]["GET"]["publicAccessBlock"] = "GetBucketPublicAccessBlock"


def _signing_what_the_client_signed(create_auth: Any) -> Any:
    """Wrap ``_create_auth`` so the signer uses every header of the request it is given.

    moto builds that request from the client's SignedHeaders only; botocore's signer
    would still drop those on its own blacklist (User-Agent, Expect, X-Amzn-Trace-Id).
    """
    from botocore.auth import _host_from_url
    from botocore.awsrequest import HTTPHeaders

    def wrapped(self: Any, credentials: Any) -> Any:
        auth = create_auth(self, credentials)

        def headers_to_sign(request: Any) -> Any:
            headers = HTTPHeaders()
            for name, value in request.headers.items():
                headers[name.lower()] = value
            if "host" not in headers:
                headers["host"] = _host_from_url(request.url)
            return headers

        auth.headers_to_sign = headers_to_sign
        return auth

    return wrapped
